"""Dagster resources: storage layout, quality (GX), Feast, and the recommender settings."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dagster import ConfigurableResource, InitResourceContext
from pydantic import ModelWrapValidatorHandler, model_validator

from dagster_project.run_recovery import record_run_worker
from dagster_project.settings import (
    DATA_DIR_ENV,
    EXPECTATIONS_DIR,
    FEAST_CONFIG_ENV,
    FEATURE_REPO_DIR,
    DataLayout,
    data_dir,
    layout,
)
from dagster_project.storage import retry_with_backoff, shared_storage
from models.checks import Problems

if TYPE_CHECKING:  # feast and GX load in seconds: imported when a store or suite runner is made
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from dagster_project.quality.validation import SuiteRunner


def _online_store_errors() -> tuple[type[BaseException], ...]:
    """What an online store raises when it is down, busy or unreachable (worth a retry)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, sqlite3.OperationalError]
    try:
        import redis.exceptions

        errors += [
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ClusterDownError,  # a cluster still electing or resharding
        ]
    except ImportError:  # the embedded profile does not need the redis client
        pass
    return tuple(errors)


ONLINE_STORE_ERRORS = _online_store_errors()


_FETCHED_WORKING_COPIES: set[tuple[str, int, str]] = set()  # (run, process, data directory)


class PlatformStorage(ConfigurableResource):
    """The data directory every asset reads and writes (empty = $RECSYS_DATA_DIR or ./data)."""

    data_dir: str = ""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """In a run: record the run's worker process (see `run_recovery`); with shared
        storage ($RECSYS_STORAGE_URL), bring the working copy up to the store's first, so
        every step reads what the steps before it published, on whichever machine."""
        if context.instance is not None and context.run_id:
            record_run_worker(context.instance, context.run_id)
        shared = shared_storage(self.layout().root)
        # a run's step, not a sensor's tick; once per process and run, however many of the
        # step's resources hold this one (each is set up apart)
        fetch = (context.run_id, os.getpid(), str(shared.root) if shared else "")
        if shared and context.run_id and fetch not in _FETCHED_WORKING_COPIES:
            _FETCHED_WORKING_COPIES.add(fetch)
            changed = shared.fetch_all()
            if context.log is not None:
                context.log.info(
                    f"shared storage {shared.url}: {changed} file(s) brought up to date"
                )

    def layout(self) -> DataLayout:
        return layout(self.data_dir or None)


class QualityResource(ConfigurableResource):
    """Great Expectations 1.x: suites from `expectations/`, a file context in the data directory."""

    expectations_dir: str = str(EXPECTATIONS_DIR)

    def runner(self, storage: PlatformStorage) -> SuiteRunner:
        from dagster_project.quality.validation import SuiteRunner

        return SuiteRunner(storage.layout().gx, Path(self.expectations_dir))


class FeastResource(ConfigurableResource):
    """The Feast repo in `feature_repo/`, resolved against the platform's data directory.

    `config_file` picks the Feast configuration file inside the repo: the embedded profile
    `feature_store.yaml` (SQLite online store, the default) or the scale-out profile
    `feature_store.redis.yaml` (Redis; needs RECSYS_REDIS_URL) or
    `feature_store.redis_cluster.yaml` (a Redis Cluster; RECSYS_REDIS_URL lists its nodes).
    Empty: $RECSYS_FEAST_CONFIG.
    """

    repo_path: str = str(FEATURE_REPO_DIR)
    config_file: str = ""  # empty: $RECSYS_FEAST_CONFIG, else feature_store.yaml
    data_dir: str = ""

    def _config_file(self) -> str:
        return self.config_file or os.environ.get(FEAST_CONFIG_ENV) or "feature_store.yaml"

    def _data_dir(self) -> Path:
        return Path(self.data_dir).resolve() if self.data_dir else data_dir()

    def _env(self) -> dict[str, str]:
        """The feast CLI's environment: the data directory, and the profile (its data
        sources follow the offline store: feature_repo/_paths.py)."""
        return {
            **os.environ,
            DATA_DIR_ENV: str(self._data_dir()),
            FEAST_CONFIG_ENV: self._config_file(),
        }

    def repo_config(self) -> RepoConfig:
        path = Path(self.repo_path) / self._config_file()
        if not path.is_file():
            raise FileNotFoundError(f"Feast configuration {path} does not exist")
        text = self._resolved_config()
        unset = sorted(set(re.findall(r"\$\{(\w+)\}", text)))
        if unset:
            raise ValueError(f"{path.name} needs environment variable(s) {', '.join(unset)}")
        from feast.repo_config import RepoConfig

        config = RepoConfig(repo_path=Path(self.repo_path), **yaml.safe_load(text))
        java_home = Path(os.environ.get("JAVA_HOME", "/nonexistent")) / "bin" / "java"
        if config.offline_store.type == "spark" and not (
            shutil.which("java") or java_home.is_file()
        ):
            raise ValueError(
                f"{path.name} runs Spark, which needs Java 17+: run `bash scripts/install_java.sh`"
                " (Debian's openjdk-17-jre-headless) or set JAVA_HOME"
            )
        return config

    def store(self) -> FeatureStore:
        from feast import FeatureStore

        (self._data_dir() / "feast").mkdir(parents=True, exist_ok=True)
        return FeatureStore(config=self.repo_config())

    def materialize(
        self,
        views: list[str],
        start: datetime,
        end: datetime,
        attempts: int = 4,
        first_wait_s: float = 2.0,
        log: Callable[[str], None] = print,
    ) -> FeatureStore:
        """Materialize `views` over [start, end) into the online store, retrying with backoff
        (2, 4, 8 s) when the store does not answer; then a clear error naming the store."""
        store = self.store()
        online = store.config.online_store
        where = getattr(online, "connection_string", None) or getattr(online, "path", "")

        def write() -> FeatureStore:
            store.materialize(start_date=start, end_date=end, feature_views=views)
            return store

        return retry_with_backoff(
            write,
            ONLINE_STORE_ERRORS,
            f"materializing {', '.join(views)} into the {online.type} online store at {where} "
            "(is it running and reachable?)",
            attempts,
            first_wait_s,
            log,
        )

    def _resolved_config(self) -> str:
        path = Path(self.repo_path) / self._config_file()
        return os.path.expandvars(
            path.read_text().replace("${" + DATA_DIR_ENV + "}", str(self._data_dir()))
        )

    def _repo_fingerprint(self) -> str:
        """A digest of the resolved configuration and every file of the feature repo."""
        digest = hashlib.sha256(self._resolved_config().encode())
        for path in sorted(Path(self.repo_path).glob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def _applied_stamp(self) -> Path:
        return self._data_dir() / "feast" / f".applied-{Path(self._config_file()).stem}"

    def _deployed(self) -> bool:
        """The registry, and a SQLite online store's file, exist."""
        config = yaml.safe_load(self._resolved_config())
        registry = config["registry"]
        files = [registry["path"] if isinstance(registry, dict) else registry]
        if "path" in (config.get("online_store") or {}):
            files.append(config["online_store"]["path"])
        return all(Path(f).exists() for f in files)

    def apply(self, log: Callable[[str], None] = print) -> str:
        """`feast apply` through Feast's own command line in a child process (`python -m
        recsys_feast`: without Feast's runtime type checks, which cost seconds at import,
        `recsys_feast.feast_import`; tests/test_readme.py applies the repo with the plain
        `feast` command, checks included); skipped
        when neither the feature repo nor its resolved configuration changed since the last
        apply into this data directory (and the registry is still there). `log` hears when
        an apply starts (it takes seconds)."""
        (self._data_dir() / "feast").mkdir(parents=True, exist_ok=True)
        fingerprint = self._repo_fingerprint()  # of what this apply deploys
        if not self.apply_needed(fingerprint):
            return "No changes: the feature repo is as it was last applied (apply skipped)\n"
        log("feast apply: the feature repo changed since the last apply; applying ...")
        cmd = [
            sys.executable,
            "-m",
            "recsys_feast",
            "-c",
            self.repo_path,
            "-f",
            str(Path(self.repo_path) / self._config_file()),
            "apply",
        ]
        done = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"feast apply failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        self._applied_stamp().write_text(fingerprint)
        return done.stdout

    def apply_needed(self, fingerprint: str | None = None) -> bool:
        """Whether `apply` would run: the feature repo or its resolved configuration changed
        since the last apply into this data directory, or the registry is gone. `fingerprint`:
        the repo's, when the caller already took it."""
        stamp, fingerprint = self._applied_stamp(), fingerprint or self._repo_fingerprint()
        return not (self._deployed() and stamp.exists() and stamp.read_text() == fingerprint)


class RecommenderSettings(ConfigurableResource):
    """The evaluation protocol and model size shared by training, scoring and evaluation."""

    test_days: int = 3
    top_k: int = 20
    dim: int = 64
    epochs: int = 200  # at most: early stopping on the validation item decides
    # Training epochs stop once this many seconds of the fit are spent (0: no budget), so the
    # model step of `make demo` stays within 45 s on 2 cores. On the default shop no trained
    # epoch beat the start under 60 s either (bench/recommender.py `generated` measures what
    # the budget costs against an unbudgeted fit).
    train_seconds: float = 30.0
    seed: int = 42
    device: str = "auto"

    @model_validator(mode="wrap")
    @classmethod
    def _check(
        cls, data: Any, handler: ModelWrapValidatorHandler[RecommenderSettings]
    ) -> RecommenderSettings:
        """Check the values on creation (in code, or from a run's config as the run starts):
        one ValueError lists every problem. A value given as an EnvVar is checked once a run
        has resolved it (until then pydantic holds a stand-in: its name, or 0)."""
        given = data if isinstance(data, dict) else {}
        deferred = {k for k, v in given.items() if hasattr(v, "env_var_name")}  # (Int)EnvVar
        settings = handler(data)
        check = Problems("RecommenderSettings")
        least = (("test_days", 1), ("top_k", 1), ("dim", 1), ("epochs", 0))
        least += (("train_seconds", 0), ("seed", 0))
        for name, low in least:  # pydantic has checked the types
            if name not in deferred:
                check.at_least(name, getattr(settings, name), low)
        if "device" not in deferred:
            check.device("device", settings.device)
        if not check.found and not deferred:  # the model's config for them must be valid too
            # imported here: the feature server imports this module and needs no torch
            from dagster_project.recommender.inputs import model_config

            try:
                model_config(settings)
            except ValueError as error:
                check.add(f"the embedding model cannot use them ({error})")
        check.raise_any()
        return settings
