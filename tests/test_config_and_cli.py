"""Settings that refuse an unsafe start, and the `kassa` command end to end on a fresh SQLite."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kassa.config import ConfigError, Settings


def test_production_refuses_the_default_secret() -> None:
    settings = Settings(_env_file=None, env="production")
    with pytest.raises(ConfigError, match="KASSA_SECRET_KEY"):
        settings.check_safe_to_start()
    own_webhook_secret = "whsec_" + base64.b64encode(b"w" * 32).decode()
    safe = Settings(
        _env_file=None,
        env="production",
        secret_key="x" * 40,
        sandbox_webhook_secret=own_webhook_secret,
        allow_sandbox_in_production=True,
    )
    safe.check_safe_to_start()
    Settings(_env_file=None).check_safe_to_start()


def test_production_refuses_the_sandbox_unless_allowed() -> None:
    own_webhook_secret = "whsec_" + base64.b64encode(b"w" * 32).decode()
    settings = Settings(
        _env_file=None,
        env="production",
        secret_key="x" * 40,
        sandbox_webhook_secret=own_webhook_secret,
    )
    assert not settings.sandbox_enabled
    with pytest.raises(ConfigError, match="KASSA_ALLOW_SANDBOX_IN_PRODUCTION") as refused:
        settings.check_safe_to_start()
    assert "KASSA_SECRET_KEY" not in str(refused.value)  # only what is wrong is named
    assert Settings(_env_file=None).sandbox_enabled  # always, outside production


def test_an_enabled_provider_without_its_keys_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="KASSA_STRIPE_SECRET_KEY is not set"):
        Settings(_env_file=None, payment_provider="stripe").check_safe_to_start()
    with pytest.raises(ConfigError, match="KASSA_RAZORPAY_KEY_ID and KASSA_RAZORPAY_KEY_SECRET"):
        Settings(_env_file=None, payment_provider="razorpay").check_safe_to_start()
    half = Settings(_env_file=None, payment_provider="stripe", stripe_secret_key="sk_test_x")
    with pytest.raises(ConfigError) as refused:
        half.check_safe_to_start()
    assert "KASSA_STRIPE_WEBHOOK_SECRET" in str(refused.value)
    assert "KASSA_STRIPE_PUBLISHABLE_KEY" in str(refused.value)
    assert "sk_test_x" not in str(refused.value)  # names, never values
    whole = Settings(
        _env_file=None,
        payment_provider="stripe",
        stripe_secret_key="sk_test_x",
        stripe_publishable_key="pk_test_x",
        stripe_webhook_secret="whsec_a, whsec_b",
    )
    whole.check_safe_to_start()
    assert whole.webhook_secrets("stripe") == ["whsec_a", "whsec_b"]
    production = Settings(
        _env_file=None,
        env="production",
        secret_key="x" * 40,
        payment_provider="stripe",
        stripe_secret_key="sk_live_x",
        stripe_publishable_key="pk_live_x",
        stripe_webhook_secret="whsec_a",
    )
    production.check_safe_to_start()  # a real provider: no sandbox needed, none enabled
    assert not production.sandbox_enabled


def test_production_refuses_the_default_webhook_secret_of_the_chosen_provider() -> None:
    settings = Settings(
        _env_file=None, env="production", secret_key="x" * 40, allow_sandbox_in_production=True
    )
    with pytest.raises(ConfigError, match="KASSA_SANDBOX_WEBHOOK_SECRET"):
        settings.check_safe_to_start()
    with pytest.raises(ConfigError, match="whsec_"):
        Settings(_env_file=None, sandbox_webhook_secret="not-a-secret").check_safe_to_start()


def test_hold_ttl_may_not_exceed_the_maximum() -> None:
    with pytest.raises(ValueError, match="HOLD_TTL"):
        Settings(_env_file=None, hold_ttl_seconds=100, hold_max_ttl_seconds=10)


def kassa_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any KASSA_ setting, on a SQLite file in `tmp_path`."""
    return (
        {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
        | {"KASSA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
        | {f"KASSA_{name.upper()}": value for name, value in settings.items()}
    )


def kassa(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kassa", *args],
        cwd=tmp_path,
        env=kassa_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_refuses_to_start_in_production_with_the_default_secret(tmp_path: Path) -> None:
    result = kassa(tmp_path, "serve", env="production")
    assert result.returncode == 2
    assert "KASSA_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_migrates_seeds_creates_users_and_sweeps(tmp_path: Path) -> None:
    assert kassa(tmp_path, "db", "upgrade").returncode == 0
    seeded = kassa(tmp_path, "seed", "--demo", "--if-empty")
    assert seeded.returncode == 0 and "seeded 4 products" in seeded.stderr
    again = kassa(tmp_path, "seed", "--demo", "--if-empty")
    assert "nothing seeded" in again.stderr

    created = kassa(
        tmp_path,
        "users",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "long-enough-password",
        "--role",
        "admin",
    )
    assert created.returncode == 0 and created.stdout.startswith("usr_")
    duplicate = kassa(
        tmp_path,
        "users",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "long-enough-password",
    )
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    weak = kassa(tmp_path, "users", "create", "--email", "w@example.com", "--password", "short")
    assert weak.returncode == 1 and "10 characters" in weak.stderr

    swept = kassa(tmp_path, "sweep")
    assert swept.returncode == 0 and "expired_holds=0" in swept.stdout
    reconciled = kassa(tmp_path, "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "checked=0 succeeded=0 failed=0 unchanged=0" in reconciled.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_creates_the_first_admin_and_sweeps_on_an_interval(tmp_path: Path) -> None:
    import sqlite3
    import time

    import httpx

    assert kassa(tmp_path, "db", "upgrade").returncode == 0
    port = _free_port()
    env = kassa_env(
        tmp_path,
        admin_email="first@example.com",
        admin_password="first-admin-password",
        sweep_interval_seconds="0.2",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "kassa", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        login = httpx.post(
            f"{base}/v1/auth/login",
            json={"email": "first@example.com", "password": "first-admin-password"},
        )
        assert login.status_code == 200
        token = login.json()["access_token"]
        me = httpx.get(f"{base}/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["role"] == "admin"
        time.sleep(1.0)
        with sqlite3.connect(tmp_path / "cli.db") as conn:
            runs = conn.execute("SELECT runs FROM job_runs WHERE name = 'sweeper'").fetchone()
        assert runs is not None and runs[0] >= 2
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_short_admin_password_refuses_to_start() -> None:
    settings = Settings(_env_file=None, admin_email="a@example.com", admin_password="short")
    with pytest.raises(ConfigError, match="KASSA_ADMIN_PASSWORD"):
        settings.check_safe_to_start()


def test_worker_sweeps_until_stopped(tmp_path: Path) -> None:
    import signal
    import sqlite3
    import time

    assert kassa(tmp_path, "db", "upgrade").returncode == 0
    env = kassa_env(tmp_path, sweep_interval_seconds="0.2")
    worker = subprocess.Popen(
        [sys.executable, "-m", "kassa", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        runs = 0
        for _ in range(100):
            time.sleep(0.2)
            with sqlite3.connect(tmp_path / "cli.db") as conn:
                row = conn.execute("SELECT runs FROM job_runs WHERE name = 'sweeper'").fetchone()
            runs = row[0] if row else 0
            if runs >= 3:
                break
        assert runs >= 3
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=10) == 0
