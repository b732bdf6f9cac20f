"""`lab …` command line: thin argument parsing over the library; each handler calls into lab/ and turns the result into
output and an exit code."""
import argparse
import json
import math
import os
import signal
import sys
import threading


def _train(args):
    from . import ablations, config, results, sweep, train
    from .layers import canonical_norm
    table = None
    if args.table is not None:   # a path names its table by the file's stem
        ablation = ablations.load(args.table)
        cells = sweep.trained_specs(ablation)
        if canonical_norm(args.norm) not in cells:
            raise ValueError(f"--norm {args.norm!r} is not a cell of {ablation.name} (--table): its cells are "
                             f"{', '.join(cells)}")
        table = ablation.name
    cfg = config.load(args.protocol, args.set)
    earlier = results.finished(results.record_path(args.out, args.norm, cfg)) is not None
    record = train.run(cfg, args.norm, args.out, table=table, progress=not args.quiet)
    failure = record["failure"]
    verdict = (f"failed at step {failure['step']}: {failure['reason']}" if failure
               else f"top-1 {record['top1']:.2f}% (EMA {record['top1_ema']:.2f}%)")
    if int(os.environ.get("RANK", 0)) == 0:   # under torchrun, one line for the run
        print(f"{record['spec']} [{record['protocol']}] {verdict} -> {record['path']}"
              + (f" + {record['weights']}" if record.get("weights") and results.weights_path(record["path"]).exists()
                 else "")
              + (" (recorded earlier, not trained again)" if earlier else ""))
    return 0


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (seconds, TFLOPS)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _table(text: str) -> str:
    """A paper table's name or the path of a .yaml table of your own, checked (its file read) before anything runs."""
    from . import ablations
    try:
        ablations.load(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _sweep(args):
    from . import sweep
    try:
        seeds = None if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers such as 0,1,2") from None
    specs = _names(args.specs)
    try:
        sweep.sweep(args.table, args.protocol, args.results, jobs=args.jobs, launcher=args.launcher, seeds=seeds,
                    overrides=args.set, dry_run=args.dry_run, slurm=args.slurm, specs=specs, deadline=args.deadline,
                    mps=args.mps, reuse=args.reuse)
    except sweep.CellErrors as err:
        print(f"lab sweep: {err}", file=sys.stderr)
        return 1
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated --specs or --variants option as a list (None when not given)."""
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _calibrate(args):
    from . import calibrate
    summary, errors = calibrate.calibrate(args.file, args.results or calibrate.RESULTS_DIR, jobs=args.jobs,
                                          dry_run=args.dry_run, report=args.report, deadline=args.deadline,
                                          mps=args.mps, specs=_names(args.specs), variants=_names(args.variants))
    if summary:
        print(summary.read_text(encoding="utf-8"), end="")
    if errors:
        print(f"lab calibrate: {errors}", file=sys.stderr)
        return 1
    return 0


def _records(args) -> list[dict]:
    """The records in --results; a --protocol none of them has is an error, not a table of "–" that exits 0."""
    from . import results
    records = results.load_records(results.records_dir(args.results))
    present = sorted({str(r.get("protocol")) for r in records})
    if args.protocol is not None and records and args.protocol not in present:
        raise ValueError(f"protocol {args.protocol!r}: no record in {args.results} has it (theirs: "
                         f"{', '.join(present)})")
    return records


def _render(args):
    from . import tables
    print(tables.render(args.table, _records(args), args.format, protocol=args.protocol))
    return 0


def _fidelity(args):
    from . import fidelity
    print(fidelity.render(fidelity.measure(_records(args), args.protocol)), end="")
    return 0


def _figures(args):
    from . import figures
    for path in figures.write_figures(args.out):
        print(path)
    return 0


def _audit(args):
    from . import principles
    specs = args.specs or principles.SECTION3_EXAMPLES
    print(json.dumps([principles.audit(s) for s in specs], indent=2) if args.json else principles.audit_table(specs))
    return 0


def _reproduce(args):
    from . import reproduce
    try:
        report = reproduce.reproduce(args.protocol, args.out, jobs=args.jobs, overrides=args.set,
                                     results_dir=args.results, train=not args.no_train)
    except RuntimeError as err:  # some notebook or cell failed; the report says which, the rest still ran
        print(f"lab reproduce: {err}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def _bench(args):
    from . import bench
    return bench.main(args)


def build_parser() -> argparse.ArgumentParser:
    from .ablations import TABLES
    tables = f"{', '.join(TABLES)} (the paper's), or the path of a .yaml table of your own"
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(p):
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override (lr, epochs, batch_size, warmup_epochs, data_path, alpha0, seed, "
                            "device, or a dotted path)")

    def mps(p):
        p.add_argument("--mps", action="store_true",
                       help="with --jobs N on a GPU: run the N processes under NVIDIA MPS, so that their kernels share "
                            "the GPU at once instead of taking turns (started for the run and stopped after it)")

    def deadline(p):
        p.add_argument("--deadline", type=positive_number, default=None, metavar="SECONDS",
                       help="start no cell that would not finish within SECONDS (judged by the slowest cell so far, "
                            "per training image); the others wait for the next run")

    p = sub.add_parser("train", help="train one cell and write its result record")
    p.add_argument("--protocol", required=True, help="paper, proxy or smoke (configs/protocols/)")
    p.add_argument("--norm", required=True, help='layernorm, rmsnorm, derf (erf with a learnable shift) or a '
                   'point-wise spec such as "erf|hshift=0.5"')
    p.add_argument("--out", default="results", help="results folder (default: results)")
    p.add_argument("--table", default=None, type=_table,
                   help=f"table the cell belongs to (checked, and written in its record): {tables}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    overrides(p)
    p.set_defaults(handler=_train)

    p = sub.add_parser("sweep", help="train every missing cell of a table (all: of every paper table, one pool)")
    p.add_argument("table", type=lambda text: text if text == "all" else _table(text), help=f"{tables}; or all")
    p.add_argument("--protocol", required=True)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (packed on one device)")
    p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    p.add_argument("--results", default="results")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2 (default: the config's seed, "
                                                 "0 unless --set seed=N)")
    p.add_argument("--specs", default=None, help='only these specs, comma-separated: layernorm,erf,"erf|hshift=2"')
    p.add_argument("--dry-run", action="store_true", help="list the cells to run, or write the SLURM submission "
                                                        "without submitting; run nothing")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="submitit SLURM parameter: partition=gpu, nodes=4, ntasks_per_node=8 (a GPU each), "
                        "time=4320 (minutes) or time=3-00:00:00, ...")
    p.add_argument("--reuse", action="append", default=[], metavar="FOLDER",
                   help="copy in a cell's record found under FOLDER (same spec, config hash and seed: the same "
                        "experiment, e.g. a calibration round's) instead of training it")
    deadline(p)
    mps(p)
    overrides(p)
    p.set_defaults(handler=_sweep)

    p = sub.add_parser("calibrate", help="train a subset of cells under candidate configs, compare with the paper")
    p.add_argument("file", help="calibration YAML: protocol, seeds, subset, variants (configs/calibration/)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (packed on one device)")
    p.add_argument("--results", default=None, help="records go to RESULTS/<variant>/ "
                                                   "(default: ablations/results/calibration)")
    p.add_argument("--dry-run", action="store_true", help="list the cells that would run; run nothing")
    p.add_argument("--report", action="store_true", help="train nothing: summarise the records present")
    p.add_argument("--specs", default=None, help='train only these of its subset, comma-separated: erf,"erf|flat=1"')
    p.add_argument("--variants", default=None, help="train only these of its variants, comma-separated")
    deadline(p)
    mps(p)
    p.set_defaults(handler=_calibrate)

    p = sub.add_parser("render", help="render a table from result records beside the paper's values")
    p.add_argument("table", type=_table, help=tables)
    p.add_argument("--results", default="results")
    p.add_argument("--format", choices=["md", "tex", "csv", "html"], default="md")
    p.add_argument("--protocol", default=None, help="only records of this protocol")
    p.set_defaults(handler=_render)

    p = sub.add_parser("fidelity", help="how well a protocol's records over Tables 1–6 tell the paper's story")
    p.add_argument("--results", default="results")
    p.add_argument("--protocol", default=None, help="only records of this protocol")
    p.set_defaults(handler=_fidelity)

    p = sub.add_parser("figures", help="write Figures 2–4 (PNG and PDF)")
    p.add_argument("--out", default="figures")
    p.set_defaults(handler=_figures)

    p = sub.add_parser("audit", help="measure the four principles of point-wise specs")
    p.add_argument("specs", nargs="*", metavar="SPEC", help="default: examples from each of Tables 1–6")
    p.add_argument("--json", action="store_true", help="print the measured quantities as JSON")
    p.set_defaults(handler=_audit)

    p = sub.add_parser("reproduce", help="execute every notebook through papermill and write a report")
    p.add_argument("--protocol", required=True)
    p.add_argument("--out", default="reproduction")
    p.add_argument("--jobs", type=int, default=2, help="cells trained at once (default 2)")
    p.add_argument("--results", default=None, help="the records' folder (default: OUT/results)")
    p.add_argument("--no-train", action="store_true",
                   help="train nothing: render the records present (a grid trained elsewhere), missing cells as –")
    overrides(p)
    p.set_defaults(handler=_reproduce)

    p = sub.add_parser("bench", help="LayerNorm vs point-wise norms: images/s, peak memory, MFU")
    from .bench import add_arguments
    add_arguments(p)
    p.set_defaults(handler=_bench)
    return parser


def unwind(signum, frame):
    """The SIGTERM handler of lab's processes (`timeout`, a scheduler, `kill`): unwind like Ctrl-C, so a sweep's workers
    stop, its MPS daemon quits and each run's log says where it stopped. By default Python just vanishes, leaving the
    daemon running."""
    raise SystemExit(128 + signum)


def unwind_on_sigterm():
    """Make SIGTERM call unwind in this process; returns a function that puts back what was there."""
    handler, hook = signal.signal(signal.SIGTERM, unwind), sys.unraisablehook

    def unwind_again(unraisable):
        """Python drops an exception raised inside a __del__ or a weakref callback ("Exception ignored in ...";
        torch.compile's caches are full of weakrefs), so unwind's SystemExit landing there left a `lab train` running
        until SIGKILL. The signal is sent again a moment later, from a thread, to land in the run's own code."""
        if isinstance(unraisable.exc_value, SystemExit) and unraisable.exc_value.code == 128 + signal.SIGTERM:
            again = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM))
            again.daemon = True
            again.start()
        else:
            hook(unraisable)

    def restore():
        signal.signal(signal.SIGTERM, handler)
        sys.unraisablehook = hook

    sys.unraisablehook = unwind_again
    return restore


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    restore = unwind_on_sigterm()
    try:
        return args.handler(args)
    except ValueError as err:
        print(f"lab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:     # Ctrl-C: the runs have said where they stopped; no traceback
        print(f"lab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:       # `lab render … | head`: the reader left; exit quietly as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:        # a folder that is a file, a read-only folder, a full disk: the path, no traceback
        print(f"lab {args.command}: error: {err}", file=sys.stderr)
        return 1
    finally:
        restore()


if __name__ == "__main__":
    raise SystemExit(main())
