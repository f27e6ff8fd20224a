"""Server configuration: TOML file, SANDBOX_* overrides, path resolution and errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sandbox import ConfigError
from sandbox._config import ServerConfig, TLSConfig, load_config

BASE = """\
[server]
state_dir = "state"
data_root = "data"
policy_dir = "policies"
"""


def write(tmp_path: Path, text: str, name: str = "sandbox.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_and_relative_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = write(conf_dir, BASE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter
    config = load_config(path, {})
    assert config.state_dir == (conf_dir / "state").resolve()
    assert config.data_root == (conf_dir / "data").resolve()
    assert config.policy_dir == (conf_dir / "policies").resolve()
    assert config.db_path == config.state_dir / "state.sqlite3"
    defaults = ServerConfig(Path("s"), Path("d"), Path("p"))
    assert config.listen == defaults.listen
    assert config.workers == defaults.workers
    assert config.max_message_bytes == defaults.max_message_bytes
    assert config.tls is None


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    absolute = tmp_path / "abs-state"
    path = write(tmp_path, BASE.replace('"state"', f'"{absolute}"'))
    assert load_config(path, {}).state_dir == absolute


def test_top_level_keys_without_server_table(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("[server]\n", "") + "workers = 5\n")
    config = load_config(path, {})
    assert config.workers == 5
    assert config.state_dir == (tmp_path / "state").resolve()


def test_file_values_override_defaults_and_env_overrides_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE + 'listen = "127.0.0.1:7000"\nworkers = 3\ngrace_period_s = 1.5\n',
    )
    from_file = load_config(path, {})
    assert (from_file.listen, from_file.workers, from_file.grace_period_s) == (
        "127.0.0.1:7000",
        3,
        1.5,
    )
    env = {
        "SANDBOX_LISTEN": "0.0.0.0:9000",
        "SANDBOX_WORKERS": "7",
        "SANDBOX_GRACE_PERIOD_S": "4.25",
        "SANDBOX_MAX_CONCURRENT_RPCS": "11",
        "SANDBOX_ENGINE_MEMORY_LIMIT": "1GB",
        "UNRELATED": "x",
        "SANDBOX_NOT_A_KEY": "ignored",
    }
    config = load_config(path, env)
    assert config.listen == "0.0.0.0:9000"
    assert config.workers == 7 and isinstance(config.workers, int)
    assert config.grace_period_s == 4.25
    assert config.max_concurrent_rpcs == 11
    assert config.engine_memory_limit == "1GB"
    # The file's other values stay.
    assert config.state_dir == (tmp_path / "state").resolve()


def test_env_alone_supplies_required_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"SANDBOX_STATE_DIR": "s", "SANDBOX_DATA_ROOT": "d", "SANDBOX_POLICY_DIR": "/p"}
    config = load_config(None, env)
    assert config.state_dir == (tmp_path / "s").resolve()
    assert config.data_root == (tmp_path / "d").resolve()
    assert config.policy_dir == Path("/p")


def test_unknown_key_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "wrokers = 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "wrokers" in str(err.value)


def test_missing_required_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nstate_dir = "state"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "data_root" in str(err.value) and "policy_dir" in str(err.value)
    assert "state_dir" not in str(err.value)
    with pytest.raises(ConfigError):
        load_config(None, {})


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ('workers = "many"\n', {}, "workers"),
        ("", {"SANDBOX_RPC_THREADS": "sixteen"}, "rpc_threads"),
        ('grace_period_s = "soon"\n', {}, "grace_period_s"),
        ("", {"SANDBOX_MAX_MESSAGE_BYTES": "4MB"}, "max_message_bytes"),
        ("max_connection_age_s = -1\n", {}, "max_connection_age_s"),
    ],
)
def test_bad_numbers(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    path = write(tmp_path, BASE + text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env)
    assert key in str(err.value)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml", {})
    assert "nope.toml" in str(err.value)
    bad = write(tmp_path, "[server\nstate_dir = ", "bad.toml")
    with pytest.raises(ConfigError) as err:
        load_config(bad, {})
    assert "bad.toml" in str(err.value)


def test_tls_table_is_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        BASE
        + '[server.tls]\ncert = "tls/server.pem"\nkey = "tls/server.key"\n'
        + f'client_ca = "{tmp_path / "ca.pem"}"\n',
    )
    config = load_config(path, {})
    assert config.tls == TLSConfig(
        cert=(tmp_path / "tls" / "server.pem").resolve(),
        key=(tmp_path / "tls" / "server.key").resolve(),
        client_ca=tmp_path / "ca.pem",
    )
    no_client_ca = write(
        tmp_path, BASE + '[server.tls]\ncert = "c.pem"\nkey = "k.pem"\n', "two.toml"
    )
    assert load_config(no_client_ca, {}).tls == TLSConfig(
        (tmp_path / "c.pem").resolve(), (tmp_path / "k.pem").resolve(), None
    )


def test_tls_table_needs_cert_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[server.tls]\ncert = "c.pem"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "key" in str(err.value)


def test_unknown_tls_key_names_it(tmp_path: Path) -> None:
    # A misspelt ``client_ca`` would silently turn mutual TLS off: it must be refused like an
    # unknown [server] key is.
    path = write(
        tmp_path, BASE + '[server.tls]\ncert = "c.pem"\nkey = "k.pem"\nclientca = "ca.pem"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "clientca" in str(err.value)


def test_plaintext_tokens_are_off_unless_allowed(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, BASE), {}).allow_plaintext_tokens is False
    on = write(tmp_path, BASE + "allow_plaintext_tokens = true\n", "on.toml")
    assert load_config(on, {}).allow_plaintext_tokens is True
    # The environment overrides the file, in either direction.
    env = {"SANDBOX_ALLOW_PLAINTEXT_TOKENS": "false"}
    assert load_config(on, env).allow_plaintext_tokens is False
    env = {"SANDBOX_ALLOW_PLAINTEXT_TOKENS": "1"}
    assert load_config(write(tmp_path, BASE), env).allow_plaintext_tokens is True
    for bad in ('"maybe"', "2"):
        path = write(tmp_path, BASE + f"allow_plaintext_tokens = {bad}\n", "bad.toml")
        with pytest.raises(ConfigError) as err:
            load_config(path, {})
        assert "allow_plaintext_tokens" in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('processes = 1\nlisten = "127.0.0.1:7000"\nprocess_port_base = 7001\n', "above 1"),
        ('processes = 4\nlisten = "127.0.0.1:7000"\nprocess_port_base = 65533\n', "1-65535"),
        ('processes = 4\nlisten = "127.0.0.1:7002"\nprocess_port_base = 7000\n', "'listen'"),
        ('processes = 2\nlisten = "127.0.0.1:7000"\nprocess_port_base = -5\n', "1-65535"),
    ],
)
def test_process_ports_must_fit_the_processes(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, BASE + text), {})
    assert "process_port_base" in str(err.value) and message in str(err.value)


def test_process_ports_one_per_process_next_to_the_shared_one(tmp_path: Path) -> None:
    text = 'processes = 4\nlisten = "0.0.0.0:7000"\nprocess_port_base = 7001\n'
    config = load_config(write(tmp_path, BASE + text), {"SANDBOX_PROCESS_PORT_BASE": "7100"})
    assert (config.processes, config.process_port_base) == (4, 7100)
    assert load_config(write(tmp_path, BASE), {}).process_port_base == 0  # off by default
