"""Protocols and overrides: paper.yaml is Table 17 field by field; overrides are checked; hashes and paths stable."""
import pytest
import yaml

from lab import cli, config, results

# Table 17 of arXiv 2512.10938 (ViT-B) and the official code's defaults (see shared reference, paper-section3.md).
TABLE17 = {
    "optim.opt": "adamw", "optim.lr": 4e-3, "optim.batch_size": 4096, "optim.weight_decay": 0.05,
    "optim.betas": [0.9, 0.999], "optim.clip_grad": None, "optim.layer_decay": None,
    "schedule.epochs": 300, "schedule.warmup_epochs": 20, "schedule.min_lr": 1e-6,
    "aug.auto_augment": "rand-m9-mstd0.5-inc1", "aug.color_jitter": 0.4, "aug.interpolation": "bicubic",
    "aug.smoothing": 0.1, "aug.mixup": 0.8, "aug.cutmix": 1.0, "aug.mixup_prob": 1.0,
    "aug.mixup_switch_prob": 0.5, "aug.mixup_mode": "batch", "aug.reprob": 0.25, "aug.remode": "pixel",
    "aug.recount": 1, "model.drop_path_rate": 0.15, "ema.decay": 0.9999, "ema.warmup": False,
    "model.name": "vit_base_patch16_224", "data.img_size": 224, "model.global_pool": "avg", "precision": "fp32",
    "model.alpha0": 0.5, "data.kind": "imagefolder", "data.num_classes": 1000, "optim.micro_batch": 128,
}


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


@pytest.mark.parametrize("key", sorted(TABLE17))
def test_paper_protocol_is_table17(key):
    assert _get(config.load("paper"), key) == TABLE17[key]


def test_protocols_are_found_and_overrides_apply():
    assert set(config.PROTOCOLS) == {"paper", "proxy", "smoke"}
    cfg = config.load("smoke", ["lr=1e-3", "epochs=3", "batch_size=32", "seed=7", "device=cpu",
                                "model.depth=2", "optim.betas=[0.9, 0.95]", "data_path=/x",
                                "data.kind=imagefolder"])
    assert (cfg["optim"]["lr"], cfg["schedule"]["epochs"], cfg["optim"]["batch_size"], cfg["seed"]) == \
        (1e-3, 3, 32, 7)
    assert cfg["model"]["depth"] == 2 and cfg["optim"]["betas"] == [0.9, 0.95] and cfg["data"]["path"] == "/x"
    assert config.load("smoke", {"lr": 0.5})["optim"]["lr"] == 0.5


def test_protocols_agree_on_every_field_type():
    """An override valid for one protocol is valid for all: `warmup_epochs=2.67` once failed on smoke (written `1`)."""
    def types(cfg, prefix=""):
        for k, v in cfg.items():
            if isinstance(v, dict):
                yield from types(v, f"{prefix}{k}.")
            elif v is not None:
                yield f"{prefix}{k}", type(v).__name__
    per_protocol = [dict(types(config.load(p))) for p in config.PROTOCOLS]
    for key in set.intersection(*(set(t) for t in per_protocol)):
        assert len({t[key] for t in per_protocol}) == 1, (key, [t[key] for t in per_protocol])
    for protocol in config.PROTOCOLS:
        assert config.load(protocol, ["warmup_epochs=2.67"])["schedule"]["warmup_epochs"] == 2.67


@pytest.mark.parametrize("protocol, overrides, word", [
    ("nonesuch", [], "nonesuch"), ("smoke", ["lrr=1"], "lrr"), ("smoke", ["model.dept=2"], "model.dept"),
    ("smoke", ["epochs=abc"], "epochs"), ("smoke", ["epochs"], "key=value"), ("smoke", ["optim=1"], "section"),
    ("smoke", ["epochs=0"], r"'schedule.epochs': 0 is out of range \(allowed: > 0\)"),
    ("smoke", ["batch_size=-64"], "optim.batch_size"), ("smoke", ["warmup_epochs=-3"], "warmup_epochs"),
    ("smoke", ["failure.loss_factor=-1"], "loss_factor"),
    ("smoke", ["ema.decay=1"], r"ema.decay.*\[0, 1\)"), ("smoke", ["optim.betas=[0.9]"], "not a list of 2"),
    ("smoke", ["optim.betas=[0.9, 1.5]"], "optim.betas"), ("smoke", ["aug.scale=[0, 1]"], "aug.scale"),
    ("smoke", ["optim.betas=[0.9, null]"], "not a list of 2"),
    ("smoke", ["threads=-1"], r"'threads': -1 is out of range"), ("smoke", ["model.global_pool=maxx"], "avgmax"),
    ("smoke", ["model.num_heads=5"], "'model.embed_dim' and 'model.num_heads': 48 is not a multiple of 5"),
    ("proxy", ["model.embed_dim=50"], "50 is not a multiple of 3"),
    ("smoke", ["lr=-1e-3"], r"'optim.lr': -0.001 is out of range \(allowed: >= 0\)"),
    ("smoke", ["failure.max_grad_norm=0"], r"'failure.max_grad_norm': 0.0 is out of range \(allowed: > 0\)"),
    ("smoke", ["aug.smoothing=1"], r"'aug.smoothing': 1.0 is out of range \(allowed: in \[0, 1\)\)"),
])
def test_bad_protocol_or_override_is_a_value_error_naming_it(protocol, overrides, word):
    with pytest.raises(ValueError, match=word):
        config.load(protocol, overrides)


def test_every_range_names_a_setting_of_every_protocol_that_has_its_section():
    """A misspelled key in RANGES would never be checked."""
    for dotted in config.RANGES:
        section, _, leaf = dotted.rpartition(".")
        for protocol in config.PROTOCOLS:
            cfg = config.load(protocol)
            assert leaf in (cfg[section] if section else cfg) or protocol == "paper" and section in ("model", "data"), \
                (dotted, protocol)


@pytest.mark.parametrize("key", ["lr", "epochs", "warmup_epochs", "batch_size", "alpha0", "ema.decay",
                                 "data.train_size", "optim.weight_decay", "eval.every_epochs",
                                 "checkpoint.every_minutes", "aug.remode"])
def test_null_is_an_error_where_the_setting_cannot_be_off(key):
    """lr=null trained at timm's default lr (exit 0); epochs=null and the like crashed later with a TypeError."""
    with pytest.raises(ValueError, match=rf"config key '{key}': null is not allowed \(only threads, .*clip_grad"):
        config.load("smoke", [f"{key}=null"])
    with pytest.raises(ValueError, match="null is not allowed"):
        config.load("smoke", {key: None})


def test_null_lr_on_the_command_line_is_exit_2_and_writes_nothing(tmp_path, capsys):
    """It trained at timm's default lr and exited 0."""
    out = tmp_path / "out"
    assert cli.main(["train", "--protocol", "smoke", "--norm", "erf", "--set", "lr=null", "--set", "epochs=1",
                     "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab train: error: config key 'lr': null is not allowed (only threads,") and \
        err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("protocol", config.PROTOCOLS)
@pytest.mark.parametrize("dotted", sorted(config.NULLABLE))
def test_a_nullable_setting_takes_null_or_a_value_of_its_type(protocol, dotted):
    """Where the protocol writes null, an override still has a type to match (clip_grad=abc was a TypeError)."""
    example = config.NULLABLE[dotted]
    folder = {"data.kind": "imagefolder"} if dotted == "data.path" else {}     # a path is read from a folder only
    assert _get(config.load(protocol, {dotted: None}), dotted) is None
    assert _get(config.load(protocol, {**folder, dotted: example}), dotted) == example
    with pytest.raises(ValueError, match=rf"config key '{dotted}': \[1\] is not a {type(example).__name__}"):
        config.load(protocol, {dotted: [1]})
    if isinstance(example, float):
        assert type(_get(config.load(protocol, {dotted: 1}), dotted)) is float


def test_a_data_path_is_one_absolute_path_however_it_is_written(tmp_path, monkeypatch):
    """The path is hashed: ~/ds, ./ds and /home/me/ds/ are one dataset, and ./ds in two folders are two."""
    def folder_hash(path):
        return config.config_hash(config.load("paper", [f"data_path={path}"]))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert config.load("paper", ["data_path=ds"])["data"]["path"] == str(tmp_path / "ds")
    assert len({folder_hash(p) for p in ("~/ds", "ds", "./ds/", f"{tmp_path}/ds", f"{tmp_path}//ds/")}) == 1
    monkeypatch.chdir(tmp_path.parent)
    assert folder_hash("ds") != folder_hash(tmp_path / "ds")


@pytest.mark.parametrize("key, text, value", [
    ("data.path", "/data/run #2", "/data/run #2"), ("data.path", "/data/a: b", "/data/a: b"),
    ("data.path", "'/data/q'", "/data/q"), ("data.path", "null", None), ("aug.auto_augment", "1e3", "1e3")])
def test_a_text_setting_takes_the_override_as_written(key, text, value):
    """YAML would read " #2" as a comment, ": " as a mapping and 1e3 as a number; quotes and null still work."""
    assert _get(config.load("paper", [f"{key}={text}"]), key) == value


def test_a_data_path_is_an_error_where_the_data_is_generated():
    with pytest.raises(ValueError, match=r"config key 'data.path' is set \(/x\) but data.kind is 'embedded'.*"
                                         r"--set data.kind=imagefolder"):
        config.load("smoke", ["data_path=/x"])


def test_every_null_of_a_protocol_or_calibration_base_is_nullable():
    """Else a protocol's own null could not be set back, and NULLABLE would lie about what may be off."""
    def nulls(cfg, prefix=""):
        for k, v in cfg.items():
            if isinstance(v, dict):
                yield from nulls(v, f"{prefix}{k}.")
            elif v is None:
                yield f"{prefix}{k}"
    bases = (config.PROTOCOL_DIR.parent / "calibration" / "bases").glob("*.yaml")
    files = [config.PROTOCOL_DIR / f"{p}.yaml" for p in config.PROTOCOLS] + sorted(bases)
    assert len(files) > len(config.PROTOCOLS)
    for path in files:
        assert set(nulls(yaml.safe_load(path.read_text()))) <= set(config.NULLABLE), path


def test_hash_is_the_same_for_an_int_or_a_float_inside_a_list():
    """aug.scale=[0.5, 1] is smoke's [0.5, 1.0]: ints became floats in scalars only, so the two hashed apart."""
    h = config.config_hash(config.load("smoke"))             # smoke's aug.scale is [0.5, 1.0]
    for same in ("aug.scale=[0.5, 1]", "aug.scale=[0.5, 1.0]"):
        cfg = config.load("smoke", [same])
        assert config.config_hash(cfg) == h and all(type(v) is float for v in cfg["aug"]["scale"]), same
    assert config.load("smoke", {"aug.scale": [1, 1]})["aug"]["scale"] == [1.0, 1.0]


@pytest.mark.parametrize("override, choices", [
    ("aug.interpolation=lanczos", "bicubic, bilinear, nearest"),         # silently bilinear on the embedded set
    ("aug.remode=foo", "const, rand, pixel"),                            # a bare AssertionError in timm
    ("aug.mixup_mode=foo", "batch, pair, elem"),                         # silently "batch" in timm's Mixup
    ("optim.opt=sgdx", r"\(did you mean 'sgd'\?\); choose one of .*adamw.*, sgd, "),  # timm: not in registry
    ("precision=fp8", "fp32, bf16, fp16"),              # these three failed in every cell of a sweep, once it ran
    ("compile_mode=fast", "default, reduce-overhead, max-autotune"),
    ("data.kind=folder", r"\(did you mean 'imagefolder'\?\); choose one of embedded, imagefolder"),
])
def test_a_setting_with_choices_names_them(override, choices):
    key, value = override.split("=")
    with pytest.raises(ValueError, match=rf"config key '{key}': '{value}' is not a valid choice.*{choices}"):
        config.load("smoke", [override])


def test_every_precision_the_config_accepts_is_one_training_can_run():
    from lab import train
    assert tuple(train.AUTOCAST) == config.CHOICES["precision"]


def test_an_optimizer_name_is_read_as_timm_reads_it():
    """timm lower-cases the name and takes the part after a lookahead_ prefix; the config keeps what was written."""
    for name in ("AdamW", "lookahead_adamw"):
        assert config.load("smoke", [f"optim.opt={name}"])["optim"]["opt"] == name
    with pytest.raises(ValueError, match=r"'lookahead_adamx' is not a valid choice \(did you mean 'adamax'\?\)"):
        config.load("smoke", ["optim.opt=lookahead_adamx"])


def test_a_path_object_is_taken_as_its_text(tmp_path):
    cfg = config.load("paper", {"data.path": tmp_path})
    assert cfg["data"]["path"] == str(tmp_path)
    assert config.config_hash(cfg) == config.config_hash(config.load("paper", [f"data_path={tmp_path}"]))


def test_a_null_of_ones_own_base_file_takes_a_value(tmp_path):
    """A source file may write null where no protocol does: setting it is then untyped, not a KeyError."""
    base = yaml.safe_load((config.PROTOCOL_DIR / "smoke.yaml").read_text())
    base["eval"]["every_epochs"] = None
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    cfg = config.load("smoke", ["eval.every_epochs=5"], source=tmp_path / "base.yaml")
    assert cfg["eval"]["every_epochs"] == 5


def test_a_base_file_older_than_a_setting_takes_the_protocols_but_lacks_no_other(tmp_path):
    """A pinned calibration base predates checkpoint.keep_weights (config.ADDED_LATER): it takes the protocol's and
    keeps its hash. Any other setting it lacks, even one that is not hashed (the device draws the embedded set), is
    still an error, and so is a section that is not one."""
    def base_without(*dotted, section=None):
        base = yaml.safe_load((config.PROTOCOL_DIR / "smoke.yaml").read_text())
        for key in dotted:
            *parents, leaf = key.split(".")
            node = base
            for part in parents:
                node = node[part]
            del node[leaf]
        if section:
            base[section] = None
        (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
        return tmp_path / "base.yaml"
    cfg = config.load("smoke", ["checkpoint.keep_weights=true"], source=base_without("checkpoint.keep_weights"))
    assert cfg["checkpoint"]["keep_weights"] is True
    assert config.config_hash(cfg) == config.config_hash(config.load("smoke"))
    for lacking, missing in ((["optim.lr"], "'optim.lr'"), (["device"], "'device'"),
                             (["checkpoint"], "'checkpoint.every_steps', 'checkpoint.every_minutes', "
                                              "'checkpoint.keep_weights'")):
        with pytest.raises(ValueError, match=rf"base.yaml: missing key\(s\) {missing}, which every protocol file has"):
            config.load("smoke", source=base_without(*lacking))
    with pytest.raises(ValueError, match=r"base.yaml: unknown key 'checkpoint'"):
        config.load("smoke", source=base_without(section="checkpoint"))
    round0 = config.load("proxy", source=config.PROTOCOL_DIR.parent / "calibration" / "bases" / "proxy-round0.yaml")
    assert round0["checkpoint"]["keep_weights"] is False


def test_crop_scale_with_min_above_max_is_a_value_error():
    """uniform_(1.0, 0.5) failed only once training began."""
    with pytest.raises(ValueError, match=r"config key 'aug.scale': \[1.0, 0.5\] is out of range .*min <= max"):
        config.load("smoke", ["aug.scale=[1.0, 0.5]"])
    assert config.load("smoke", ["aug.scale=[0.7, 0.7]"])["aug"]["scale"] == [0.7, 0.7]


def test_hash_covers_the_result_but_not_seed_device_or_checkpoints():
    h = config.config_hash(config.load("smoke"))
    assert len(h) == 12 and int(h, 16) >= 0
    for same in (["seed=3"], ["device=cuda"], ["threads=2"], ["log_every=5"], ["checkpoint.every_steps=1"],
                 ["compile=true"], ["compile_mode=reduce-overhead"], ["data.workers=0"], ["optim.micro_batch=16"]):
        assert config.config_hash(config.load("smoke", same)) == h, same
    for other in (["lr=1e-3"], ["epochs=2"], ["aug.mixup=0.5"], ["model.alpha0=1.0"], ["model.depth=2"],
                  ["aug.smoothing=0.2"], ["failure.max_grad_norm=10"]):
        assert config.config_hash(config.load("smoke", other)) != h, other
    assert config.config_hash(config.load("proxy")) != h


def test_record_paths_are_safe_unique_and_deterministic(tmp_path):
    cfg = config.load("smoke")
    specs = ["erf", "erf|hshift=-0.5", "erf|hshift=0.5", "erf|vshift=0.5", "layernorm", "erf|neg", "erf|clip=1e-05"]
    paths = [results.record_path(tmp_path, s, cfg) for s in specs]
    assert len(set(paths)) == len(specs)
    assert all(p.parent == tmp_path and p.suffix == ".json" for p in paths)
    assert all(set(p.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789_.-+") for p in paths)
    assert results.record_path(tmp_path, "erf|hshift=0", cfg) == paths[0]       # canonical name
    assert results.record_path(tmp_path, "erf", config.load("smoke", ["seed=1"])) != paths[0]


@pytest.mark.parametrize("override", ["model.depth=2.5", "schedule.epochs=1.5", "compile=1", "schedule.epochs=true"])
def test_a_whole_number_or_a_switch_refuses_another_type(override):
    with pytest.raises(ValueError, match="is not a"):
        config.load("smoke", [override])
