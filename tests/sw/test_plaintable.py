"""starc.plaintable prints what rich prints (the reference: rich itself, the same tables through
rich's Table and Console), or declines: the real tables of `config show`, `config show --raw`
and `timing dense`, comparison tables with notes, and random tables, titles and paragraphs."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starc import config, plaintable
from starc.planner import table


def _print(monkeypatch: pytest.MonkeyPatch, *, plain: bool, args: tuple, kw: dict) -> str:
    """print_rows' output through the plain-text path or through rich."""
    if not plain:
        monkeypatch.setattr(plaintable, "render", lambda *a, **k: None)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        table.print_rows(*args, **kw)
    monkeypatch.undo()
    return out.getvalue()


def _real_tables() -> list[tuple[tuple, dict]]:
    from starc.config_cli import _config_show  # noqa: F401 - the command's module loads
    from starc.glossary import get
    from starc.golden.cli import _DENSE_COLUMNS, dense_cost_rows
    cfg = config.load("samsung-hbm2-pim")
    rows = dense_cost_rows(cfg, [256, 1024, 5000], 128)
    fields = config.settable_fields("attacc-hbm3-5.2", ["timing.tRCD=20"])
    d = cfg.derived()
    return [
        ((f"dense attention, {cfg.name}, d = 128; cycles in tCK", _DENSE_COLUMNS,
          [table.cells(r, _DENSE_COLUMNS) for r in rows]), {}),
        (("every field --set accepts", ("key", "value", "origin", "source"),
          [[f["key"], str(f["value"]), f["origin"], f["source"]] for f in fields]),
         {"glossary": False, "left": lambda k: k != "value", "wrap": ("source",)}),
        ((f"{cfg.name}: {cfg.description}", ("name", "value", "definition"),
          [[k, str(d[k]), get(k).short] for k in ("row_period_cycles", "refresh_tax",
                                                  "banks_per_stack")]),
         {"glossary": False, "left": lambda k: k != "value"}),
        (("policies", ("policy", "budget", "cycles", "cycles_x_dense", "rel_error"),
          [["dense", "-", "12,345", "1", "0"], ["starc-row [x]", "256", "1,234", "0.1", "0.02"]]),
         {"notes": ["*_x_dense empty where no dense row.", "[bold]not markup[/bold]"]}),
        (("no rows", ("L", "cycles"), []), {}),
    ]


@pytest.mark.parametrize("columns", [None, "0", "40", "100", "133", "400"])
def test_real_tables_equal_rich(monkeypatch: pytest.MonkeyPatch, columns: str | None) -> None:
    for args, kw in _real_tables():
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        with monkeypatch.context() as m:
            plain, rich = (_print(m, plain=p, args=args, kw=kw) for p in (True, False))
        assert plain == rich, f"COLUMNS={columns}:\n{plain}\n--- rich ---\n{rich}"


def test_a_terminal_or_forced_colour_goes_to_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("t", ("L",), [["1"]], [False], [None], 80, None)
    assert plaintable.render(*args) is not None
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert plaintable.render(*args) is None
    monkeypatch.delenv("FORCE_COLOR")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True
    with contextlib.redirect_stdout(Tty()):
        assert plaintable.render(*args) is None
    for odd in ("wide 表", "tab\there", "e\u0301", "zero\u200bwidth"):
        assert plaintable.render(odd, ("L",), [["1"]], [False], [None], 80, None) is None


def test_one_cell_characters_are_one_cell_for_rich() -> None:
    from rich.cells import cell_len
    wrong = [hex(c) for c in range(0x20, 0x30000)
             if plaintable._one_cell(chr(c)) and cell_len(chr(c)) != 1]
    assert wrong == [], wrong[:20]


_TEXT = st.text(st.sampled_from(list("ab cdXY_-.,:;[]()/↓↑×–µ0123456789     ")), max_size=90)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_TEXT, n_cols=st.integers(1, 5), data=st.data(),
       columns=st.one_of(st.none(), st.integers(0, 220)))
def test_random_tables_equal_rich(title: str, n_cols: int, data: st.DataObject,
                                  columns: int | None) -> None:
    names = [data.draw(st.from_regex(r"[a-z][a-z_.]{0,14}", fullmatch=True)) for _ in
             range(n_cols)]
    rows = data.draw(st.lists(st.lists(_TEXT, min_size=n_cols, max_size=n_cols), max_size=4))
    wrap = [k for k in names if data.draw(st.booleans())]
    lefts = {k: data.draw(st.booleans()) for k in names}
    with pytest.MonkeyPatch.context() as m:
        if columns is None:
            m.delenv("COLUMNS", raising=False)
        else:
            m.setenv("COLUMNS", str(columns))
        kw = {"glossary": False, "left": lambda k: lefts[k], "wrap": tuple(wrap)}
        plain, rich = (_print(m, plain=p, args=(title, names, rows), kw=kw)
                       for p in (True, False))
    assert plain == rich, f"\n{plain}\n--- rich ---\n{rich}"


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from(list("ab cd efghijklm\n  .,;↓")), max_size=300),
       width=st.integers(1, 130))
def test_paragraph_wrap_equals_rich(text: str, width: int) -> None:
    from rich.console import Console
    from rich.text import Text
    out = io.StringIO()
    Console(file=out, width=width).print(Text(text, style="dim"))
    assert "".join(x + "\n" for x in plaintable.wrap(text, width)) == out.getvalue()

