"""`sluice serve` takes upstream's EPP flags in every form Go's flag package accepts, so Sluice
can replace the upstream image in an existing Helm release."""

from __future__ import annotations

import pytest

from sluice.cli.flags import FlagError
from sluice.cli.main import main
from sluice.cli.serve_options import parse_serve_options

# What upstream's `inferencepool` chart (v1.3) passes to its EPP container, plus the flags a
# values file typically adds.
HELM_CHART_ARGS = [
    "--pool-name",
    "vllm-llama3-8b-instruct",
    "--pool-namespace",
    "default",
    "--pool-group",
    "inference.networking.k8s.io",
    "--zap-encoder",
    "json",
    "--config-file",
    "/config/default-plugins.yaml",
    "--tracing=false",
    "--metrics-endpoint-auth=false",
    "--ha-enable-leader-election",
    "--total-queued-requests-metric",
    "vllm:num_requests_waiting",
    "--kv-cache-usage-percentage-metric",
    "vllm:kv_cache_usage_perc",
    "--lora-info-metric",
    "vllm:lora_requests_info",
    "--cache-info-metric",
    "vllm:cache_config_info",
    "--total-running-requests-metric",
    "vllm:num_requests_running",
    "-v=4",
]


def test_the_upstream_helm_chart_arguments_parse_unchanged() -> None:
    options = parse_serve_options(HELM_CHART_ARGS)
    assert options["pool-name"] == "vllm-llama3-8b-instruct"
    assert options["tracing"] is False
    assert options["metrics-endpoint-auth"] is False
    assert options["ha-enable-leader-election"] is True
    assert options["v"] == 4
    assert options.log_format == "json"


def test_defaults_match_upstream() -> None:
    options = parse_serve_options(["--pool-name=p"])
    assert (options["grpc-port"], options["grpc-health-port"], options["metrics-port"]) == (
        9002,
        9003,
        9090,
    )
    assert options["refresh-metrics-interval"] == pytest.approx(0.05)
    assert options["metrics-staleness-threshold"] == pytest.approx(2.0)
    assert options["secure-serving"] is True
    assert options["pool-group"] == "inference.networking.k8s.io"


@pytest.mark.parametrize(
    "argv",
    [
        ["--pool-name=p", "--refresh-metrics-interval=50ms"],
        ["--pool-name", "p", "--refresh-metrics-interval", "50ms"],
        ["-pool-name", "p", "-refresh-metrics-interval=0.05"],
    ],
)
def test_equals_space_and_single_dash_forms_are_the_same(argv: list[str]) -> None:
    assert parse_serve_options(argv)["refresh-metrics-interval"] == pytest.approx(0.05)


def test_durations_accept_go_forms() -> None:
    options = parse_serve_options(["--pool-name=p", "--metrics-staleness-threshold=1m30s"])
    assert options["metrics-staleness-threshold"] == pytest.approx(90.0)


def test_boolean_false_must_use_equals() -> None:
    # As in Go: `--secure-serving false` would leave "false" as a stray argument.
    assert parse_serve_options(["--pool-name=p", "--secure-serving=false"])["secure-serving"] is (
        False
    )
    with pytest.raises(FlagError, match="unexpected argument 'false'"):
        parse_serve_options(["--pool-name=p", "--secure-serving", "false"])


def test_namespace_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMESPACE", "inference")
    assert parse_serve_options(["--pool-name=p"]).pool_namespace == "inference"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pool-name=p", "--grcp-port=1"], "unknown flag --grcp-port"),
        (["--pool-name=p", "--grpc-port=abc"], "--grpc-port: expected an integer"),
        (["--pool-name=p", "--refresh-metrics-interval=fast"], "50ms, 2s or 1m30s"),
        (["--pool-name=p", "--config-file=a", "--config-text=b"], "mutually exclusive"),
        ([], "exactly one of --pool-name and --endpoint-selector"),
        (["--pool-name=p", "--tracing=maybe"], "use true or false"),
        (["--pool-name"], "flag needs an argument: --pool-name"),
    ],
)
def test_mistakes_name_the_flag_and_the_fix(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_serve_options(argv)


def test_an_unknown_flag_exits_2_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--pool-name=p", "--bogus"]) == 2
    assert "unknown flag --bogus" in capsys.readouterr().err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out
    for command in ("up", "serve", "sim", "bench", "crds"):
        assert f"  {command} " in listing
    assert main(["serve", "--help"]) == 0
    serve_help = capsys.readouterr().out
    assert "--pool-name" in serve_help and "--resources" in serve_help


@pytest.mark.parametrize("command", ["up", "serve", "sim", "bench", "crds"])
def test_each_command_describes_its_flags(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([command, "--help"])
    except SystemExit as exit_:  # argparse-based commands exit after printing help
        code = int(exit_.code or 0)
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_the_ext_proc_transport_can_fall_back_to_grpc_aio() -> None:
    assert parse_serve_options(["--pool-name=p"])["ext-proc-transport"] == "h2"
    assert (
        parse_serve_options(["--pool-name=p", "--ext-proc-transport=grpc"])["ext-proc-transport"]
        == "grpc"
    )
    hyper = parse_serve_options(["--pool-name=p", "--ext-proc-transport=hyper"])
    assert hyper["ext-proc-transport"] == "hyper"  # python-hyper's h2 state machine
    with pytest.raises(FlagError, match="h2, hyper or grpc"):
        parse_serve_options(["--pool-name=p", "--ext-proc-transport=http3"])


def test_the_engine_keepalive_must_be_a_finite_duration_of_zero_or_more() -> None:
    options = parse_serve_options(["--pool-name=p"])
    assert options["engine-keepalive-timeout"] == 4.0  # below vLLM's and llama.cpp's 5 s
    assert (
        parse_serve_options(["--pool-name=p", "--engine-keepalive-timeout=0"])[
            "engine-keepalive-timeout"
        ]
        == 0.0
    )
    for bad in ("-1s", "nan"):
        with pytest.raises(FlagError, match="engine-keepalive-timeout"):
            parse_serve_options(["--pool-name=p", f"--engine-keepalive-timeout={bad}"])


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        # Issue #15 item 10: both were accepted; 0 made the scraper a busy loop (48 % idle CPU).
        ("--max-body-bytes=-1", "--max-body-bytes=-1: must be above 0"),
        ("--max-body-bytes=0", "--max-body-bytes=0: must be above 0"),
        ("--refresh-metrics-interval=0", "--refresh-metrics-interval=0.0: must be above 0"),
        ("--refresh-metrics-interval=-1s", "must be above 0"),
        ("--metrics-staleness-threshold=0", "--metrics-staleness-threshold=0.0: must be above"),
        ("--grpc-port=70000", "--grpc-port=70000: must be 0-65535"),
        ("--proxy-allowed-routes=/v1/rerank", "--proxy-allowed-routes: '/v1/rerank': expected"),
    ],
)
def test_values_that_parse_but_cannot_work_are_refused(flag: str, message: str) -> None:
    with pytest.raises(FlagError, match=message.replace("[", r"\[")):
        parse_serve_options(["--pool-name=p", flag])
