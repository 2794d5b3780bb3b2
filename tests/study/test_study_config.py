"""Study files: validation names the field; bad files give one clear line and a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfbo.study import StudyFileError, load_study_file, redact_url, resolve_url
from mfbo.study._storage import scrub
from tests.study.conftest import REPO, run_cli, write_study


def test_valid_file_resolves_paths_and_defaults(tmp_path):
    p = write_study(tmp_path / "ok.toml", workers=3, storage="env:MFBO_DB")
    cfg = load_study_file(p)
    assert cfg.output == (tmp_path / "run").resolve()
    assert cfg.workers == 3
    assert cfg.fidelity == {"data_fraction": [0.25, 1.0], "epochs": [1, 8]}
    assert cfg.metric == "val_energy_mae_per_atom"
    assert cfg.executor == "local" and cfg.storage_url == "env:MFBO_DB"
    assert cfg.driver_threads is None  # "auto"
    assert load_study_file(write_study(tmp_path / "t.toml", execution={"driver_threads": 3})).driver_threads == 3


def test_shipped_study_files_validate(tmp_path):
    for name in ("quickstart.toml", "oc20_gmp_singlenn.toml"):
        cfg = load_study_file(REPO / "studies" / name, check_output=False)
        assert cfg.backend == "builtin"
        assert cfg.train is not None and cfg.train.is_file()
        assert cfg.test is not None and cfg.test.is_file()


def _bad(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(StudyFileError) as ei:
        load_study_file(p)
    return str(ei.value)


BASE = """
[objective]
backend = "builtin"
[data]
train = "bundled:water"
[fidelity]
epochs = [1, 10]
data_fraction = [0.1, 1.0]
[budget]
ffe = 2
"""


@pytest.mark.parametrize("old,new,field", [
    ('train = "bundled:water"', 'train = "no_such.traj"', "data.train"),
    ('train = "bundled:water"', 'train = "bundled:nope"', "data.train"),
    ('backend = "builtin"', 'backend = "tensorflow"', "objective.backend"),
    ("epochs = [1, 10]", "epochs = [10, 1]", "fidelity.epochs"),
    ("data_fraction = [0.1, 1.0]", "data_fraction = [1.0, 0.1]", "fidelity.data_fraction"),
    ("data_fraction = [0.1, 1.0]", "data_fraction = [0.1, 2.0]", "fidelity.data_fraction"),
    ("ffe = 2", "ffe = -1", "budget.ffe"),
    ("ffe = 2", "", "budget"),
    ("[budget]", "[budget]\nbogus = 1", "budget.bogus"),
    ('train = "bundled:water"', 'train = "bundled:water"\ndata_mode = "disk"', "data.data_mode"),
    ('train = "bundled:water"', 'train = "bundled:water"\nfeaturize_workers = 0', "data.featurize_workers"),
    ('train = "bundled:water"', 'train = "bundled:water"\nshard_size = 2.5', "data.shard_size"),
    ('train = "bundled:water"', 'train = "bundled:water"\ndata_memory_gb = -1', "data.data_memory_gb"),
    ('train = "bundled:water"', 'train = "bundled:water"\nshard_max_gb = 0', "data.shard_max_gb"),
    ('train = "bundled:water"', 'train = "bundled:water"\nshard_dir = 3', "data.shard_dir"),
    ('train = "bundled:water"', 'train = "bundled:water"\nshard_jacobians = "disk"', "data.shard_jacobians"),
])
def test_bad_fields_are_named(tmp_path, old, new, field):
    assert old in BASE
    msg = _bad(tmp_path, BASE.replace(old, new))
    assert f"field '{field}'" in msg and "bad.toml" in msg


def test_more_bad_fields(tmp_path):
    assert "execution.executor" in _bad(tmp_path, BASE + "[execution]\nexecutor = 'mpi'\n")
    assert "execution.max_failure_rate" in _bad(tmp_path, BASE + "[execution]\nmax_failure_rate = 2\n")
    assert "execution.driver_threads" in _bad(tmp_path, BASE + "[execution]\ndriver_threads = 0\n")
    assert "execution.driver_threads" in _bad(tmp_path, BASE + "[execution]\ndriver_threads = 'all'\n")
    assert "storage.url" in _bad(tmp_path, BASE + "[storage]\nurl = 'mysql://x'\n")
    assert "objective.metric" in _bad(tmp_path, BASE.replace('backend = "builtin"',
                                                              'backend = "builtin"\nmetric = "accuracy"'))
    assert "priors.files[0]" in _bad(tmp_path, BASE + "[priors]\nfiles = ['missing.toml']\n")
    assert "not valid TOML" in _bad(tmp_path, "[study\n")
    # an output "directory" below a regular file can never be created (even as root)
    (tmp_path / "afile").write_text("x")
    msg = _bad(tmp_path, BASE + "[study]\noutput = 'afile/run'\n")
    assert "study.output" in msg


def test_data_options_are_read_and_match_the_trainer(tmp_path):
    from mfbo.study._config import _DATA_MODES, _DATA_OPTION_KEYS, _JACOBIAN_MODES
    from mfbo.training._cli import DATA_OPTION_KEYS
    from mfbo.training._source import DATA_MODES, JACOBIAN_MODES

    assert _DATA_MODES == DATA_MODES and _DATA_OPTION_KEYS == DATA_OPTION_KEYS and _JACOBIAN_MODES == JACOBIAN_MODES
    p = tmp_path / "ok.toml"
    p.write_text(BASE.replace('train = "bundled:water"', 'train = "bundled:water"\ndata_mode = "stream"\n'
                              'shard_dir = "shards"\nfeaturize_workers = 2\nshard_size = 16\ndata_memory_gb = 0.5\n'
                              'shard_max_gb = 50\nshard_jacobians = "recompute"'))
    cfg = load_study_file(p)
    assert cfg.data_options == {"mode": "stream", "shard_dir": str((tmp_path / "shards").resolve()), "workers": 2,
                                "shard_size": 16, "memory_limit_gb": 0.5, "max_gb": 50,
                                "jacobians": "recompute"}
    assert load_study_file(p).to_dict()["data_options"] == cfg.data_options
    p.write_text(BASE)
    assert load_study_file(p).data_options == {}
    msg = _bad(tmp_path, BASE.replace('backend = "builtin"', 'backend = "amptorch"')
               .replace('train = "bundled:water"', 'train = "bundled:water"\ndata_mode = "stream"'))
    assert "field 'data.data_mode'" in msg and "builtin backend only" in msg


def test_storage_urls_and_redaction(tmp_path, monkeypatch):
    url = "postgresql://alice:pa55word@db.example:5432/mfbo"
    assert redact_url(url) == "postgresql://alice:***@db.example:5432/mfbo"
    assert "pa55word" not in scrub(f"could not connect to {url} (pa55word)", url)
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    monkeypatch.setenv("MFBO_TEST_DB", url)
    assert resolve_url("env:MFBO_TEST_DB", tmp_path).startswith("postgresql+psycopg://alice:pa55word@")
    monkeypatch.delenv("MFBO_TEST_DB")
    from mfbo.errors import StorageError

    with pytest.raises(StorageError, match="MFBO_TEST_DB"):
        resolve_url("env:MFBO_TEST_DB", tmp_path)


@pytest.mark.parametrize("old,new,field", [
    ('train = "bundled:water"', 'train = "missing.traj"', "data.train"),
    ('backend = "builtin"', 'backend = "nosuchbackend"', "objective.backend"),
    ("epochs = [1, 10]", "epochs = [10, 1]", "fidelity.epochs"),
    ('train = "bundled:water"', 'train = "bundled:water"\ndata_mode = "disk"', "data.data_mode"),
    (None, None, "study.output"),
])
def test_cli_bad_study_file_one_line(tmp_path, old, new, field):
    text = BASE.replace(old, new) if old else BASE + "[study]\noutput = 'afile/run'\n"
    (tmp_path / "afile").write_text("x")
    p = tmp_path / "bad.toml"
    p.write_text(text)
    r = run_cli("run", p, cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mfbo run: error:") and f"field '{field}'" in lines[0]
    assert "Traceback" not in r.stderr


def test_default_optimizer_gets_the_study_budget_and_a_plain_factory_does_not(tmp_path):
    from mfbo.optimize import SearchSpace
    from mfbo.study._setup import build_optimizer

    cfg = load_study_file(write_study(tmp_path / "ok.toml", budget_ffe=2.5))
    space = SearchSpace.from_dict({"x": {"type": "float", "bounds": [0.0, 1.0]},
                                   "epochs": {"type": "fidelity", "bounds": [1, 8], "target": 8}})
    assert build_optimizer(cfg, space, None, []).budget == 2.5  # drives the optimiser's cost-cooling option
    seen = {}

    def factory(space, seed=0, **options):  # a user's factory without a budget argument still works
        seen.update(options, seed=seed)
        return "opt"

    assert build_optimizer(cfg, space, None, [], factory=factory) == "opt"
    assert "seed" in seen and "budget" not in seen
