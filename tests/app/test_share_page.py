"""Runs page sharing controls (app/ui/share.py) through AppTest: the selected runs become a bundle that imports
into another history, and an HTML report; the import box is there even before a history has runs."""
from storage.bundle import import_bundle
from tests.app.test_pages import _select_rows, app, ok


def test_selected_runs_download_as_bundle_and_report(app_db, tmp_path):
    db, ids = app_db
    at = ok(app("runs"))
    assert any(e.label == "Import runs from a bundle" for e in at.expander)
    ok(_select_rows(at, [0, 1]))                                  # the two newest
    at.button(key="r_share_bundle_make").click().run()
    ok(at)
    chosen, data = at.session_state["r_share_bundle"]
    assert sorted(chosen) == sorted(ids[-2:])
    res = import_bundle(data, tmp_path / "other.db")
    assert len(res.imported) == 2
    at.button(key="r_share_report_make").click().run()
    ok(at)
    page = at.session_state["r_share_report"][1].decode()
    assert page.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in page
    assert len(at.get("download_button")) >= 3                   # CSV, bundle, report


def test_import_box_shows_on_an_empty_history(db, monkeypatch):
    monkeypatch.setenv("MELT_DB", str(db))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    at = ok(app("runs"))
    assert any(e.label == "Import runs from a bundle" for e in at.expander)


def test_an_imported_hostile_run_is_shown_as_text(app_db, tmp_path):
    """A bundle from someone else: markdown and tags in its name reach the Live page only escaped."""
    import re

    from storage.bundle import export_bundle
    from tests.app.test_pages import seed_run

    other = tmp_path / "theirs.db"
    theirs = seed_run(other, name="evil [click](http://x.example) <img src=x>", tags=["**bold**"], levels=(1, 2),
                      requests_per_level=10)
    db, _ = app_db
    (_, rid), = import_bundle(export_bundle([theirs], other), db).imported
    at = ok(app("live", run=rid))
    md = "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert r"\[click\]" in md and r"\<img" in md and "http://" not in md
    assert not re.search(r"(?<!\\)\[click", md)
