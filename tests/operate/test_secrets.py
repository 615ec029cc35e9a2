"""Secrets (server.api_key, token/key-named runtime.env values, --api-key style pass-through) are *** in every
output kt-launch makes, and reach the server unchanged (the fake SGLang records what it got)."""

import json
import signal

import pytest

from kt_launch.cli import main
from kt_launch.render.redact import PREFIX_LEN, is_secret_name, redact_argv, redact_env, scrub
from operate.support import Launch, free_port, make_fake, plain_profile, write_host, write_profile

API_KEY = "sk-PROFILE-SECRET-1234"
HF_TOKEN = "hf_ENV_SECRET_5678"
OPENAI = "sk-ENV-OPENAI-9012"
EXTRA = "hf_EXTRA_ARGS_SECRET_3456"
PASS = "sk-PASSTHROUGH-SECRET-7890"
INHERITED = "wandb-INHERITED-SECRET-2468"  # exported in kt-launch's own environment
SECRETS = (API_KEY, HF_TOKEN, OPENAI, EXTRA, PASS, INHERITED)


def secret_profile(python, port):
    return plain_profile(python, port,
                         server={"api_key": API_KEY, "extra_args": ["--hf-token", EXTRA]},
                         runtime={"env": {"HF_TOKEN": HF_TOKEN, "OPENAI_API_KEY": OPENAI,
                                          "TOKENIZERS_PARALLELISM": "false"}})


@pytest.fixture
def setup(tmp_path):
    fake = make_fake(tmp_path)
    port = free_port()
    prof = write_profile(tmp_path, secret_profile(fake, port))
    host = write_host(tmp_path)
    return tmp_path, prof, host, port


def base_args(prof, host):
    return ["--profile", str(prof), "--host-facts", str(host), "--no-check"]


def assert_clean(text):
    for s in SECRETS:
        assert s not in text


@pytest.mark.parametrize("cmd", [["--dry-run"], ["--dry-run", "--json"], ["check"], ["check", "--json"]],
                         ids=["dry-run", "dry-run-json", "check", "check-json"])
def test_outputs_mask_every_secret(setup, capsys, cmd):
    tmp, prof, host, _ = setup
    args = ([cmd[0], *base_args(prof, host), *cmd[1:]] if cmd[0] == "check" else [*base_args(prof, host), *cmd])
    rc = main([*args, "--", "--admin-api-key", PASS])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert_clean(out + err)
    if "--json" in cmd and cmd[0] != "check":
        doc = json.loads(out)
        assert doc["argv"][doc["argv"].index("--api-key") + 1] == "***"
        assert doc["argv"][doc["argv"].index("--admin-api-key") + 1] == "***"
        assert doc["env"]["HF_TOKEN"] == "***" and doc["env"]["OPENAI_API_KEY"] == "***"
        assert doc["env"]["TOKENIZERS_PARALLELISM"] == "false"  # a tokenizer setting, not a token
        assert doc["resolved"]["server.api_key"]["value"] == "***"


def test_dry_run_text_shows_masks_where_secrets_were(setup, capsys):
    _, prof, host, _ = setup
    assert main([*base_args(prof, host), "--dry-run", "--", "--api-key=" + PASS]) in (0, 3)
    out = capsys.readouterr().out
    assert "--api-key '***'" in out and "--api-key=***" in out and "HF_TOKEN='***'" in out


def test_supervise_logs_mask_secrets_but_the_server_gets_them(setup, launches):
    tmp, prof, host, port = setup
    launch = Launch(tmp, [*base_args(prof, host), "--supervise", "--", "--admin-api-key", PASS],
                    {"FAKE_MODE": "serve", "FAKE_READY_AFTER": "0.2", "FAKE_ECHO_ENV": "WANDB_API_KEY",
                     "WANDB_API_KEY": INHERITED})
    launches.append(launch)
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="ready")
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    # the fake prints server_args=... with every argument, as SGLang does: teed, but masked
    assert "server_args=ServerArgs(" in launch.out and "***" in launch.out
    assert_clean(launch.out + launch.err)
    assert 'Authorization: Bearer $API_KEY' in launch.err
    argv = json.loads((tmp / "argv.json").read_text())
    env = json.loads((tmp / "env.json").read_text())
    assert argv[argv.index("--api-key") + 1] == API_KEY
    assert argv[argv.index("--hf-token") + 1] == EXTRA
    assert argv[argv.index("--admin-api-key") + 1] == PASS
    assert env["HF_TOKEN"] == HF_TOKEN and env["OPENAI_API_KEY"] == OPENAI
    assert env["WANDB_API_KEY"] == INHERITED and "WANDB_API_KEY=***" in launch.out  # echoed by the fake, masked


def test_supervise_early_death_tail_is_masked(setup, launches):
    tmp, prof, host, _ = setup
    launch = Launch(tmp, [*base_args(prof, host), "--supervise"], {"FAKE_MODE": "die"})
    launches.append(launch)
    assert launch.finish() == 7
    assert "lines of SGLang's output" in launch.err
    assert_clean(launch.out + launch.err)


def test_exec_passes_secrets_unchanged_and_prints_none(setup, launches):
    tmp, prof, host, _ = setup
    launch = Launch(tmp, [*base_args(prof, host), "--", "--api-key-for-admin", PASS], {"FAKE_MODE": "die"})
    launches.append(launch)
    assert launch.finish() == 7
    # kt-launch's own messages go to stderr before the exec; stdout is the server's from then on
    assert "the plan was made for the recorded host" in launch.err
    assert_clean(launch.err)
    argv = json.loads((tmp / "argv.json").read_text())
    assert PASS in argv and API_KEY in argv
    assert json.loads((tmp / "env.json").read_text())["HF_TOKEN"] == HF_TOKEN


def test_passthrough_api_key_alone(tmp_path, capsys):
    prof = write_profile(tmp_path, plain_profile("/usr/bin/python3", 30000))
    host = write_host(tmp_path)
    for extra in (["--dry-run"], ["--dry-run", "--json"]):
        rc = main(["--profile", str(prof), "--host-facts", str(host), "--no-check", *extra, "--", "--api-key", PASS])
        out, err = capsys.readouterr()
        assert rc == 0, out + err
        assert PASS not in out + err


@pytest.mark.parametrize("name,secret", [
    ("HF_TOKEN", True), ("HUGGING_FACE_HUB_TOKEN", True), ("OPENAI_API_KEY", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("DB_PASSWORD", True), ("GITHUBTOKEN", True), ("api_key", True), ("admin_api_key", True), ("hf-token", True),
    ("TOKENIZERS_PARALLELISM", False), ("CUDA_VISIBLE_DEVICES", False), ("PYTORCH_CUDA_ALLOC_CONF", False),
    ("tokenizer_path", False), ("ssl_keyfile", False), ("KEYBOARD", False),
    ("GITHUB_PAT", True), ("GH_PAT", True), ("PAT", True), ("MYSQL_PWD", True), ("PWD", False), ("OLDPWD", False),
    ("PATH", False), ("PATCH_LEVEL", False), ("max_total_tokens", False), ("max_deferred_experts_per_token", True),
])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_flags_kt_launch_renders_are_secret_only_when_declared_and_numbers_stay():
    argv = ["--kt-max-deferred-experts-per-token", "2", "--my-token", "5", "--my-token", "abcd1234",
            "--api-key", "--next-flag", "--served-model-name=--api-key", "--api-key=-dash"]
    assert redact_argv(argv) == ["--kt-max-deferred-experts-per-token", "2", "--my-token", "5", "--my-token", "***",
                                 "--api-key", "--next-flag", "--served-model-name=--api-key", "--api-key=***"]


def test_a_cut_off_copy_of_a_long_secret_is_masked_too():
    key = "sk-" + "Q7" * 5000
    for text in (f"got {key[:80]!r}", f"x{key[:13]}y", key[:200] + "..."):
        out = scrub(text, {key})
        assert key[:PREFIX_LEN] not in out and "***" in out, out


def test_redaction_helpers():
    assert redact_argv(["--api-key", "x1234", "--tokenizer-path", "/t", "--hf-token=abcd"]) == \
        ["--api-key", "***", "--tokenizer-path", "/t", "--hf-token=***"]
    assert redact_env({"HF_TOKEN": "abc", "TOKENIZERS_PARALLELISM": "false"}) == \
        {"HF_TOKEN": "***", "TOKENIZERS_PARALLELISM": "false"}
    # free text: real secrets are masked; values too short or too common to be secrets are left alone
    assert scrub("key sk-1234 and 1 and true", {"sk-1234", "1", "true"}) == "key *** and 1 and true"


def test_invalid_secret_values_are_not_echoed_in_errors(tmp_path, capsys):
    prof = tmp_path / "p.yaml"
    prof.write_text("model: {path: /m}\nruntime: {env: {HF_TOKEN: 12345678}}\n")
    rc = main(["--profile", str(prof), "--dry-run", "--no-check", "--host-facts", str(write_host(tmp_path))])
    err = capsys.readouterr().err
    assert rc == 2 and "runtime.env.HF_TOKEN" in err and "12345678" not in err


def test_the_launcher_argv_of_another_host_is_masked_by_key_value_and_flag():
    """The fleet's "run this on b" command (issue 18): --set keys in any case or inside a JSON section, values
    the plan knows as secret whatever their key, and pass-through flags argparse would expand (--api-k)."""
    from kt_launch.render.redact import redact_launcher_argv

    argv = ["kt-launch", "--profile", "p.yaml", "--fleet-host", "b",
            "--set", f"runtime.env.HF_TOKEN={HF_TOKEN}", "--set", f"SERVER.api_key={API_KEY}",
            "--set", json.dumps({"api_key": PASS, "port": 30000}).join(["server=", ""]),
            "--set", f"server.extra_args=[\"--x\", \"{EXTRA}\"]",
            "--set", "kt.max_deferred_experts_per_token=3", "--set", "runtime.env.TOKENIZERS_PARALLELISM=false",
            "--supervise", "--", "--api-k", OPENAI, f"--admin-api={INHERITED}", "--tp", "2"]
    out = redact_launcher_argv(argv, {EXTRA})
    text = " ".join(out)
    assert not any(s in text for s in SECRETS), text
    assert "kt.max_deferred_experts_per_token=3" in out and "runtime.env.TOKENIZERS_PARALLELISM=false" in out
    assert out[-2:] == ("--tp", "2") and "--supervise" in out and "30000" in text


SHORT = "pw5x7"  # a short secret: every output masks it alike (the supervisors' own rule once waited for 8 characters)


def test_one_redactor_a_short_inherited_secret_is_masked_in_supervise_logs(setup, launches):
    tmp, prof, host, _ = setup
    launch = Launch(tmp, [*base_args(prof, host), "--supervise"],
                    {"FAKE_MODE": "serve", "FAKE_READY_AFTER": "0.2", "FAKE_ECHO_ENV": "WANDB_API_KEY",
                     "WANDB_API_KEY": SHORT})
    launches.append(launch)
    launch.wait_for(lambda: "is ready" in launch.err, timeout=30, what="ready")
    launch.signal(signal.SIGTERM)
    assert launch.finish() == 143
    assert SHORT not in launch.out + launch.err and "WANDB_API_KEY=***" in launch.out
    assert json.loads((tmp / "env.json").read_text())["WANDB_API_KEY"] == SHORT  # the server gets it unchanged


def test_one_redactor_the_crash_file_masks_like_every_other_output(tmp_path):
    """The crash file goes through the same scrub: a short secret and a cut-off copy of a long one are masked."""
    import subprocess
    import sys

    long_token = "hf_" + "CRASHSECRET" * 4
    code = ("import sys, kt_launch.cli as c, kt_launch.commands.profiles as p\n"
            f"def boom(args, passthrough): raise RuntimeError('boom ' + {long_token[:20]!r} + ' {SHORT}')\n"
            "p.run = boom\n"
            "sys.exit(c.main(['profiles']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={"KT_LAUNCH_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_TOKEN": long_token,
                            "DB_PASSWORD": SHORT})
    assert r.returncode == 1, r.stderr
    (crash,) = tmp_path.glob("crash-*.txt")
    text = r.stderr + crash.read_text()
    assert "RuntimeError: boom ***" in text and SHORT not in text and long_token[:PREFIX_LEN] not in text, text


def test_one_threshold_lives_in_core_secrets():
    """No output keeps its own length threshold or mask for secrets: they read core/secrets.py's."""
    import pathlib
    import re

    import kt_launch

    root = pathlib.Path(kt_launch.__file__).parent
    own = re.compile(r"is_secret_name\([^)]*\)\s*and\s*len\(|len\([^)]*\)\s*>=\s*\d+\s*and\s*is_secret_name|"
                     r"replace\([^)]*,\s*\"\*\*\*\"\)|MIN_SCRUB_LEN\s*=|MASK\s*=")
    found = [f"{p.relative_to(root)}: {m.group(0)}" for p in root.rglob("*.py") if p.name != "secrets.py"
             for m in own.finditer(p.read_text())]
    assert not found, found
