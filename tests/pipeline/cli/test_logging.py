"""`legx -v` / `legx -q`: the command line shows the library loggers' messages as `legx: ...`,
progress on stdout and warnings on stderr, at the verbosity asked for."""

from __future__ import annotations

import logging

import pytest

from legx.pipeline.cli.main import LIBRARY_LOGGERS, ConsoleHandler, configure_logging, main

ENGINE = logging.getLogger("legx.pipeline.engine.run")
METHODS = logging.getLogger("legx.methods.leg.explainer")


@pytest.fixture(autouse=True)
def restore_library_loggers():
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in LIBRARY_LOGGERS}
    yield
    for name, (level, handlers) in saved.items():
        library_logger = logging.getLogger(name)
        library_logger.setLevel(level)
        library_logger.handlers[:] = handlers


def _log_each_level() -> None:
    ENGINE.debug("plan: 3 stages")
    ENGINE.info("resuming run r1: 12 rows already written")
    METHODS.warning("WARNING: grid larger than the image")


@pytest.mark.parametrize(("flags", "out", "err"), [
    ([], "legx: resuming run r1: 12 rows already written\n", "legx: WARNING: grid larger than the image\n"),
    (["-q"], "", "legx: WARNING: grid larger than the image\n"),
    (["-v"], "legx: legx.pipeline.engine.run: plan: 3 stages\nlegx: legx.pipeline.engine.run: resuming run r1: 12 rows"
             " already written\n", "legx: legx.methods.leg.explainer: WARNING: grid larger than the image\n"),
])
def test_verbosity_flags_before_the_command(tmp_path, capsys, flags, out, err):
    assert main([*flags, "query", str(tmp_path / "nothing"), "select 1"]) == 1
    capsys.readouterr()
    _log_each_level()
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (out, err)


def test_configuring_again_replaces_the_handler(capsys):
    configure_logging(0)
    configure_logging(0)
    ENGINE.info("once")
    assert capsys.readouterr().out == "legx: once\n"
    assert all(sum(isinstance(h, ConsoleHandler) for h in logging.getLogger(name).handlers) == 1
               for name in LIBRARY_LOGGERS)


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(["-v", "-q", "query", "x", "select 1"])
    assert "not allowed with argument" in capsys.readouterr().err
