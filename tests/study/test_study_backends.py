"""Storage and executors: PostgreSQL with 2 concurrent workers (credentials never shown or stored),
and a Dask LocalCluster study."""

from __future__ import annotations

import json

from mfbo.study import Study
from tests.study.conftest import FAST_OPTIMIZER, HERE, PG_PASSWORD, cli_env, run_cli, write_study
from tests.study.study_synth import SPACE, Synth

FIDELITY = {"data_fraction": {"type": "fidelity", "bounds": [0.25, 1.0], "target": 1.0},
            "epochs": {"type": "fidelity", "bounds": [1, 8], "target": 8}}


def _overlap(recs: list[dict]) -> bool:
    spans = sorted((r["started_at"], r["timings"]["finished_at"]) for r in recs)
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_postgresql_study_two_workers(tmp_path, postgres_url):
    study = write_study(tmp_path / "pg.toml", budget_ffe=0.2, workers=2, storage="env:MFBO_TEST_PG_URL",
                        options={"delay": 0.4})
    env = cli_env(MFBO_TEST_PG_URL=postgres_url)
    # the timeout only guards against a hang: on a loaded 2-core machine this run took over 240 s
    r = run_cli("run", study, "--no-progress", cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "run"
    assert not (d / "study.db").exists()  # it really used the server
    st_out = run_cli("status", d, "--json", env=env)
    assert st_out.returncode == 0, st_out.stderr
    st = json.loads(st_out.stdout)
    assert st["status"] == "finished" and st["trials"]["completed"] >= 2
    assert st["storage"].startswith("postgresql+psycopg://mfbo:***@127.0.0.1:")
    recs = [json.loads(p.read_text()) for p in (d / "results").glob("trial_*.json")]
    assert _overlap(recs), "the two workers never ran trials at the same time"

    # rows are in the server: the study's own table and Ax's experiment tables
    import psycopg

    uid = json.loads((d / "study.json").read_text())["uid"]
    with psycopg.connect(postgres_url) as con:
        n = con.execute("SELECT count(*) FROM mfbo_trial WHERE study_uid = %s AND kind = 'trial' "
                        "AND status = 'completed'", (uid,)).fetchone()[0]
        n_ax = con.execute("SELECT count(*) FROM trial_v2 t JOIN experiment_v2 e ON t.experiment_id = e.id "
                           "WHERE e.name = %s", (json.loads((d / "study.json").read_text())["ax_experiment"],)
                           ).fetchone()[0]
        dump = " ".join(str(row) for row in con.execute("SELECT * FROM mfbo_trial").fetchall())
        dump += " ".join(str(row) for row in con.execute("SELECT * FROM mfbo_study").fetchall())
    assert n == st["trials"]["completed"]
    assert n_ax >= st["trials"]["completed"]
    # the password appears nowhere: study dir files, log, status output, stored records
    texts = [p.read_text(errors="replace") for p in d.rglob("*") if p.is_file() and p.suffix != ".traj"]
    for text in [*texts, st_out.stdout, r.stdout, r.stderr, dump]:
        assert PG_PASSWORD not in text


def test_dask_local_cluster_study(tmp_path):
    study = Study.create(tmp_path / "run", Synth(delay=0.05), {**SPACE, **FIDELITY}, budget_ffe=0.2, workers=2,
                         executor="dask", dask={"cluster": "local"}, optimizer_options=FAST_OPTIMIZER,
                         python_path=[HERE])
    result = study.run(progress=False)
    assert result["status"] == "finished"
    assert result["trials"]["completed"] >= 2 and result["trials"]["failed"] == 0
    assert (tmp_path / "run" / "best.json").is_file()
    recs = [json.loads(p.read_text()) for p in (tmp_path / "run" / "results").glob("trial_*.json")]
    assert len(recs) == result["trials"]["completed"]


def test_dask_worker_killed_fails_its_trial_once(tmp_path):
    # the first objective call kills its worker process (like an OOM kill): that trial fails with the
    # reason, and is not run again on another worker
    objective = Synth(delay=0.02, script_dir=str(tmp_path / "calls"), script={0: "sigkill"})
    study = Study.create(tmp_path / "run", objective, {**SPACE, **FIDELITY}, budget_ffe=0.15, workers=2,
                         executor="dask", dask={"cluster": "local", "options": {"processes": True}},
                         optimizer_options=FAST_OPTIMIZER, python_path=[HERE], max_failure_rate=0.6)
    result = study.run(progress=False)
    assert result["status"] == "finished"
    rows = [r for r in study.trial_rows() if r["status"] == "failed"]
    assert len(rows) == 1 and "Dask worker running the trial" in rows[0]["error"], rows
    recs = [json.loads(p.read_text()) for p in (tmp_path / "run" / "results").glob("trial_*.json")]
    assert rows[0]["trial_id"] not in {rec["trial_id"] for rec in recs}
