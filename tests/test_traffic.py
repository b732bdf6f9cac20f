"""`lab bench --traffic`: inductor's byte count of each norm's compiled forward and backward for an H100, without one."""
from pathlib import Path

from lab import layers, traffic
from lab.bench import DERF, SECTION3_VARIANTS
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


def test_fp32_counts_an_fp32_output():
    """--dtypes fp32: no cast for a bf16 matmul, the output is written in fp32 (half an activation more than bf16's)."""
    row = traffic.traffic("layernorm", "fp32")
    assert abs(row["forward_activations"] - 4.0) < 0.01 and row["dtype"] == "fp32"


def test_every_pointwise_backward_moves_no_more_than_layernorms():
    """The backward fuses into one pass over grad and x, as LayerNorm's does: Derf's learnable shift included."""
    ln = traffic.traffic("layernorm", "bf16")
    for norm in ("derf", "erf|flat=0.5", "sin"):
        row = traffic.traffic(norm, "bf16")
        assert row["forward_bytes"] <= ln["forward_bytes"], norm
        assert row["backward_bytes"] <= 1.01 * ln["backward_bytes"], norm


def test_the_count_sees_a_backward_that_does_not_fuse(monkeypatch):
    """The layer's earlier backward (grad_x first, α's gradient a full sum), same gradients: inductor then stores an
    intermediate and reads grad and x again, and the count must show it."""
    def grad_x_first(grad, x, alpha, shift, weight, fn):
        fu, dfu = fn.value_and_grad(alpha * x)
        grad_u = grad * weight * dfu
        grad_x = grad_u * alpha
        return grad_x, (grad_u * x).sum(), None, layers._per_channel(grad * fu), layers._per_channel(grad)

    monkeypatch.setattr(layers, "_backward", grad_x_first)
    ln, erf = traffic.traffic("layernorm", "bf16"), traffic.traffic("erf", "bf16")
    assert erf["backward_bytes"] > 1.4 * ln["backward_bytes"]


def test_readme_traffic_table_is_the_commands_output():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### What the kernels move"):readme.index("## Layout")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    norms = ("layernorm", *SECTION3_VARIANTS, DERF)
    rendered = traffic.format_table([traffic.traffic(norm, "bf16") for norm in norms]).splitlines()
    assert rows and rows == [line for line in rendered if line.startswith("| `")]


def test_each_dtype_is_relative_to_layernorm_of_its_own_dtype():
    """bf16 and fp32 rows in one table: each norm's traffic against LayerNorm's of its dtype, not the first one's."""
    rows = [{"norm": n, "dtype": d, "forward_bytes": fwd, "backward_bytes": bwd, "forward_activations": 1.0,
             "forward_kernels": 1, "backward_activations": 1.0, "backward_kernels": 1}
            for d, fwd, ln_bwd, bwd in [("bf16", 30, 70, 60), ("fp32", 40, 120, 104)]
            for n, bwd in [("layernorm", ln_bwd), ("erf", bwd)]]
    relative = [line.rstrip(" |").rsplit(" | ", 1)[1] for line in traffic.format_table(rows).splitlines()
                if line.startswith("| `erf`")]
    assert relative == ["0.900", "0.900"]
