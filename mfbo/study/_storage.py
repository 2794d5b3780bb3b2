"""The study store: trial table + the Ax experiment, in SQLite (default) or PostgreSQL.

One writer, the driver. Two kinds of tables live in the same database:

* ``mfbo_study`` / ``mfbo_trial`` (SQLAlchemy Core): the study's own record, the source of
  truth on resume: every trial's parameters, fidelities, status, learning curve, cost and
  the worker's full record.
* Ax's own tables (``ax.storage.sqa_store``, created on first use): the Ax experiment the
  optimiser keeps (every trial, arm and observation), saved after each change.

URLs: ``None`` -> ``sqlite:///<study dir>/study.db``; ``postgresql://...`` (psycopg 3 driver
added); ``env:VAR`` -> the URL in environment variable VAR, so passwords never sit in
study files. Passwords are redacted from everything shown or stored.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from mfbo.errors import StorageError

__all__ = ["StudyStore", "resolve_url", "redact_url", "check_url_form", "check_storage", "scrub"]

_ENV = "env:"


def check_url_form(url: str) -> str | None:
    """A message saying what is wrong with a storage URL as written, or None."""
    if url.startswith(_ENV):
        var = url[len(_ENV):]
        if not var or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            return f"'env:' must be followed by an environment variable name, got {url!r}"
        return None
    if url == "sqlite":
        return None
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", url):
        return (f"unsupported storage URL {redact_url(url)!r}; use 'sqlite:///PATH', 'postgresql://USER@HOST:PORT/DB' "
                "or 'env:VAR' naming an environment variable that holds the URL")
    return None


def resolve_url(url: str | None, study_dir: Path) -> str:
    """The SQLAlchemy URL a study's storage setting means (env: expanded, drivers filled in)."""
    if url is None or url == "sqlite":
        return f"sqlite:///{Path(study_dir).resolve() / 'study.db'}"
    if url.startswith(_ENV):
        var = url[len(_ENV):]
        value = os.environ.get(var)
        if not value:
            raise StorageError(f"storage URL names environment variable {var!r}, which is not set; "
                               f"export {var}=postgresql://USER:PASSWORD@HOST:PORT/DB")
        msg = check_url_form(value)
        if msg or value.startswith(_ENV):
            raise StorageError(f"environment variable {var!r}: {msg or 'must hold a URL, not env:'}")
        url = value
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def check_storage(url: str | None, study_dir: Path) -> None:
    """Check a study's storage setting before anything is written: ``env:VAR`` must be set, and a
    PostgreSQL server must accept a connection (10 s connect timeout). SQLite needs nothing.

    Raises:
        StorageError: naming the URL (password redacted) and the reason.
    """
    resolved = resolve_url(url, study_dir)
    if resolved.startswith("sqlite"):
        return
    import sqlalchemy as sa

    engine = None
    try:
        engine = sa.create_engine(resolved, connect_args={"connect_timeout": 10})
        with engine.connect():
            pass
    except Exception as exc:
        raise StorageError(f"cannot connect to study storage {redact_url(resolved)}: "
                           f"{scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, resolved)}"
                           ) from None
    finally:
        if engine is not None:
            engine.dispose()


def redact_url(url: str | None) -> str | None:
    """The URL with its password replaced by ``***`` (``env:VAR`` is shown as is)."""
    if url is None or url.startswith(_ENV) or url == "sqlite":
        return url
    return re.sub(r"(://[^:/@]*:)([^@]*)(@)", r"\1***\3", url)


def _password(url: str) -> str | None:
    m = re.search(r"://[^:/@]*:([^@]*)@", url)
    return m.group(1) if m and m.group(1) else None


def scrub(text: str, url: str | None) -> str:
    """Remove a URL's password (and the URL itself) from any text, e.g. a driver error message."""
    if not url:
        return text
    pw = _password(url)
    text = text.replace(url, redact_url(url) or "")
    if pw:
        text = text.replace(pw, "***")
    return text


_PG_VARCHAR_MAX = 10485760
_pg_compat_done = False


def _postgres_compat() -> None:
    """Let Ax's MySQL/SQLite-oriented column types create on PostgreSQL.

    Ax declares long text columns as ``Text(LONGTEXT_BYTES)`` / ``String(4294967295)``; PostgreSQL
    refuses a length on TEXT and VARCHARs above 10 MiB. On PostgreSQL only, such columns compile
    to plain ``TEXT`` (unbounded there), which stores the same values.
    """
    global _pg_compat_done
    if _pg_compat_done:
        return
    from sqlalchemy import types
    from sqlalchemy.ext.compiler import compiles

    def _text(type_, compiler, **kw):
        return "TEXT"

    def _varchar(type_, compiler, **kw):
        n = getattr(type_, "length", None)
        return "TEXT" if n is None or n > _PG_VARCHAR_MAX else f"VARCHAR({n})"

    for cls in (types.Text, types.TEXT):
        compiles(cls, "postgresql")(_text)
    for cls in (types.String, types.VARCHAR):
        compiles(cls, "postgresql")(_varchar)
    _pg_compat_done = True


# Ax's INFO lines on every storage call ("Ax SQL storage initialized ...", "You are deleting ... and
# all its associated data") and its per-parameter warnings on every experiment load/save
# ("`sort_values` is not specified ...") say nothing a study user can act on.
_AX_CHATTY_LOGGERS = ("ax.storage.sqa_store.with_db_settings_base", "ax.storage.sqa_store.delete")
_AX_CHATTY_WARNINGS = (r"`sort_values` is not specified for `ChoiceParameter`",
                       r"`is_ordered` is not specified for `ChoiceParameter`")


def _below_warning(record) -> bool:
    """False (drop) for INFO lines and for the warning about the deletion the driver asked for itself."""
    import logging

    return record.levelno >= logging.WARNING and not str(record.msg).startswith("You are deleting")


def quiet_ax() -> None:
    """Keep Ax's repeated storage INFO lines and ChoiceParameter warnings off the terminal and out of
    ``study.log`` (installed before Ax is imported; idempotent)."""
    import logging
    import warnings

    for name in _AX_CHATTY_LOGGERS:
        lg = logging.getLogger(name)
        if _below_warning not in lg.filters:
            lg.addFilter(_below_warning)
    for message in _AX_CHATTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


quiet_ax()


def _quiet_ax() -> None:
    """Ax logs INFO lines to stderr on every storage call; keep them off the progress view."""
    import logging

    import ax  # noqa: F401 (attaches Ax's stderr handler to the "ax" logger)

    quiet_ax()
    for h in logging.getLogger("ax").handlers:
        h.setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if name == "ax" or name.startswith("ax."):
            logging.getLogger(name).setLevel(logging.WARNING)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class StudyStore:
    """The driver's handle on the study database.

    Args:
        url: a resolved SQLAlchemy URL (see :func:`resolve_url`).
        study_uid: the study's unique id (key of its rows; several studies may share a PostgreSQL DB).
        readonly: open for reading only (``mfbo status`` while a driver runs); never creates tables.
    """

    def __init__(self, url: str, study_uid: str, *, readonly: bool = False):
        import sqlalchemy as sa

        self.url = url
        self.uid = study_uid
        self.readonly = readonly
        md = sa.MetaData()
        self.t_study = sa.Table(
            "mfbo_study", md,
            sa.Column("uid", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("config", sa.Text, nullable=False),
            sa.Column("state", sa.Text, nullable=False),
        )
        self.t_trial = sa.Table(
            "mfbo_trial", md,
            sa.Column("study_uid", sa.String(64), primary_key=True),
            sa.Column("trial_id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("params", sa.Text, nullable=False),
            sa.Column("data_fraction", sa.Float, nullable=False),
            sa.Column("epochs", sa.Integer, nullable=False),
            sa.Column("cost_ffe", sa.Float, nullable=False, default=0.0),
            sa.Column("cost_s", sa.Float, nullable=False, default=0.0),
            sa.Column("value", sa.Float),
            sa.Column("curve", sa.Text),
            sa.Column("error", sa.Text),
            sa.Column("record", sa.Text),
            sa.Column("submitted_at", sa.Float),
            sa.Column("finished_at", sa.Float),
        )
        self._md = md
        self._wal = not readonly
        try:
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": 30}
            self.engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                @sa.event.listens_for(self.engine, "connect")
                def _sqlite_pragmas(dbapi_conn, _rec):  # WAL: readers never block the one writer
                    cur = dbapi_conn.cursor()
                    if self._wal:  # a reader leaves the mode alone (it may sit in a read-only folder)
                        cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA busy_timeout=30000")
                    cur.close()
            if not readonly:
                md.create_all(self.engine)
        except Exception as exc:  # sqlalchemy/psycopg errors: report without the password
            raise StorageError(f"cannot open study storage {redact_url(url)}: "
                               f"{scrub(str(exc).splitlines()[0], url)}") from None
        self._ax_ready = False

    # -- study row -----------------------------------------------------------------
    def create_study(self, name: str, config: dict, state: dict) -> None:
        with self.engine.begin() as c:
            c.execute(self.t_study.insert().values(uid=self.uid, name=name, created=time.time(),
                                                   config=_dumps(config), state=_dumps(state)))

    def has_study(self) -> bool:
        import sqlalchemy as sa

        try:
            with self.engine.connect() as c:
                row = c.execute(sa.select(self.t_study.c.uid).where(self.t_study.c.uid == self.uid)).first()
        except Exception as exc:
            raise StorageError(f"cannot read study storage {redact_url(self.url)}: "
                               f"{scrub(str(exc).splitlines()[0], self.url)}") from None
        return row is not None

    def state(self) -> dict:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            row = c.execute(sa.select(self.t_study.c.state).where(self.t_study.c.uid == self.uid)).first()
        if row is None:
            raise StorageError(f"study {self.uid} not found in {redact_url(self.url)}")
        return _loads(row[0])

    def set_state(self, **updates: Any) -> dict:
        st = self.state()
        st.update(updates)
        with self.engine.begin() as c:
            c.execute(self.t_study.update().where(self.t_study.c.uid == self.uid).values(state=_dumps(st)))
        return st

    # -- trials --------------------------------------------------------------------
    def next_trial_id(self) -> int:
        import sqlalchemy as sa

        with self.engine.connect() as c:
            m = c.execute(sa.select(sa.func.max(self.t_trial.c.trial_id))
                          .where(self.t_trial.c.study_uid == self.uid)).scalar()
        return 0 if m is None else int(m) + 1

    def add_running(self, trial_id: int, params: dict, data_fraction: float, epochs: int, *,
                    kind: str = "trial") -> None:
        with self.engine.begin() as c:
            c.execute(self.t_trial.insert().values(
                study_uid=self.uid, trial_id=trial_id, kind=kind, status="running", params=_dumps(params),
                data_fraction=float(data_fraction), epochs=int(epochs), cost_ffe=0.0, cost_s=0.0,
                submitted_at=time.time()))

    def finish(self, trial_id: int, *, status: str, cost_ffe: float, cost_s: float, curve: list | None = None,
               value: float | None = None, error: str | None = None, record: dict | None = None) -> bool:
        """Record a running trial's outcome; False (and no change) when it was not running any more."""
        if value is not None and not math.isfinite(value):
            value = None
        with self.engine.begin() as c:
            res = c.execute(self.t_trial.update()
                            .where(self.t_trial.c.study_uid == self.uid)
                            .where(self.t_trial.c.trial_id == trial_id)
                            .where(self.t_trial.c.status == "running")
                            .values(status=status, cost_ffe=float(cost_ffe), cost_s=float(cost_s),
                                    curve=_dumps(curve) if curve is not None else None, value=value,
                                    error=scrub(error, self.url) if error else None,
                                    record=_dumps(record) if record is not None else None,
                                    finished_at=time.time()))
            return res.rowcount == 1

    def trials(self, kind: str | None = "trial", *, light: bool = False) -> list[dict]:
        """Every trial row as a dict (JSON fields decoded), in trial_id order.

        Args:
            kind: "trial", "final" or None (both).
            light: leave out the curve and the full record (for frequent polling).
        """
        import sqlalchemy as sa

        t = self.t_trial
        cols = [c for c in t.c if not (light and c.name in ("curve", "record"))]
        q = sa.select(*cols).where(t.c.study_uid == self.uid)
        if kind is not None:
            q = q.where(self.t_trial.c.kind == kind)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(self.t_trial.c.trial_id)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d.pop("study_uid", None)
            d["params"] = _loads(d["params"])
            d["curve"] = _loads(d.get("curve"))
            d["record"] = _loads(d.get("record"))
            out.append(d)
        return out

    # -- Ax experiment -------------------------------------------------------------
    def _ax_init(self) -> None:
        # Ax keeps one global session factory; point it at this study's database.
        from ax.storage.sqa_store import db as ax_db

        if not self._ax_ready:
            _quiet_ax()
            if self.url.startswith("postgresql"):
                _postgres_compat()
            ax_db.init_engine_and_session_factory(url=self.url, force_init=True)
            if not self.readonly:
                ax_db.create_all_tables(ax_db.get_engine())
            self._ax_ready = True

    def save_experiment(self, experiment: Any, saved: dict | None = None) -> dict:
        """Persist the optimiser's Ax experiment with Ax's SQL storage (tables created on first use).

        Args:
            experiment: the Ax ``Experiment``.
            saved: what the previous call returned for this experiment object, or None. With it only
                the trials that finished (completed, failed, abandoned) since are written (Ax's
                ``save_or_update_trials``, their data included), each once, unless they are more than
                half of all trials: then the whole record is saved, which is cheaper per trial (40
                trials of 30-point curves: 0.7 s whole, 1.2 s by trial; a whole save of 40 trials after
                every change took 0.4 s per call). Trials still running are written when they finish
                (a whole save writes them as running); ``mfbo status`` lists them meanwhile.

        Returns:
            trial index -> status name as stored, for the next call.
        """
        from ax.storage.sqa_store.save import save_experiment, save_or_update_trials

        self._ax_init()
        trials = experiment.trials
        changed = [] if saved is None else [t for i, t in trials.items()
                                            if t.status.is_terminal and saved.get(i) != t.status.name]
        if saved is None or getattr(experiment, "db_id", None) is None or 2 * len(changed) > len(trials):
            save_experiment(experiment)
            return {i: t.status.name for i, t in trials.items()}
        if changed:
            save_or_update_trials(experiment, changed)
        return {**saved, **{t.index: t.status.name for t in changed}}

    def delete_experiment(self, name: str) -> None:
        """Remove a stored Ax experiment (before a rebuilt optimiser's experiment replaces it)."""
        from ax.storage.sqa_store.delete import delete_experiment

        self._ax_init()
        delete_experiment(name)

    def load_experiment(self, name: str) -> Any:
        """The stored Ax experiment ``name`` (as Ax's ``load_experiment`` returns it)."""
        from ax.storage.sqa_store.load import load_experiment

        self._ax_init()
        return load_experiment(name)

    def close(self) -> None:
        self.engine.dispose()

    def end_session(self) -> None:
        """After a driver session (SQLite only): checkpoint the write-ahead log into the database file and
        switch to the rollback journal, so the study can be read (``mfbo status``, ``mfbo inspect``) from a
        read-only copy or mount; the next driver's connections switch WAL on again. Best effort: a
        reader still connected leaves the database in WAL mode, which is correct too."""
        if not self.url.startswith("sqlite") or self.readonly:
            return
        self._wal = False  # connections opened from now on (e.g. the closing status) keep the file as left
        self.engine.dispose()
        if self._ax_ready:
            try:
                from ax.storage.sqa_store import db as ax_db

                ax_db.get_engine().dispose()
            except Exception:  # Ax's engine already gone: nothing holds the file
                pass
        try:
            with self.engine.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                c.exec_driver_sql("PRAGMA journal_mode=DELETE")
        except Exception:  # e.g. locked by a reader: WAL stays, nothing is lost
            pass
        self.engine.dispose()
