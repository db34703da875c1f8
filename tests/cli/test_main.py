from cfaudit.cli.main import main


def test_usage_error_is_one_message_not_a_traceback(capsys):
    assert main(["data", "index", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option" in err and "Traceback" not in err


def test_user_error_is_one_red_line(tmp_path, capsys):
    missing = tmp_path / "absent.csv"
    assert main(["data", "stats", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(missing.name) in err and "Traceback" not in err


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in (
        "phantom",
        "data",
        "train",
        "edit",
        "evaluate",
        "scm",
        "discover",
        "report",
        "ui",
        "demo",
    ):
        assert command in out, command


def test_discover_errors_are_one_line(tmp_path, capsys):
    assert main(["discover", "--index", str(tmp_path / "none.csv"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none.csv" in err and "Traceback" not in err
    assert (
        main(
            [
                "discover",
                "--index",
                str(tmp_path / "none.csv"),
                "--out",
                str(tmp_path / "d"),
                "--do",
                "Heart=0",
            ]
        )
        == 2
    )
    assert "unknown attribute 'Heart'" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    """An OSError that names a path (a file where a folder is needed) is one line, not a traceback."""
    from cfaudit.cli import main as cli_main

    blocker = tmp_path / "afile"
    blocker.write_text("not a folder", encoding="utf-8")

    def app(args, standalone_mode):
        blocker.mkdir(exist_ok=True)

    monkeypatch.setattr(cli_main, "_register_commands", lambda: None)
    monkeypatch.setattr(cli_main, "app", app)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "File exists (a file is where a folder is needed)" in err and "afile" in err
    assert "Traceback" not in err
