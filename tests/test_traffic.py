"""`lab bench --traffic`: inductor's byte count of each norm's compiled forward and backward for an H100, without one."""
from lab import traffic
from lab.cli import main


def test_cli_prints_layernorm_first_then_each_norm(capsys):
    assert main(["bench", "--traffic", "--norms", "derf", "--dtypes", "fp32"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[:2] for row in rows] == [["| `layernorm`", "fp32"], ["| `derf`", "fp32"]]
    assert rows[0].endswith("| 1.000 |")


def test_layernorm_forward_reads_its_inputs_once_and_writes_its_outputs_once():
    """x and the residual in, their sum (kept for backward) and the bf16 output out: 3.5 fp32 activations."""
    row = traffic.traffic("layernorm", "bf16")
    assert abs(row["forward_activations"] - 3.5) < 0.01 and row["forward_kernels"] == 1
