"""Alert grammar: parsing, error messages naming the rule, and evaluation against a report dict."""
import pytest

from defirisk.errors import InputError
from defirisk.report.alerts import check_assets, evaluate, parse_rule, parse_rules, required_shocks


def test_parse_forms():
    r = parse_rule("cliff_within=0.15")
    assert (r.metric, r.op, r.threshold, r.asset) == ("cliff_within", "<=", 0.15, None)
    r = parse_rule(" cliff_within@WETH <= 15% ")
    assert (r.metric, r.threshold, r.asset) == ("cliff_within", 0.15, "WETH")
    r = parse_rule("bad_debt_at[0.2]>1e6")
    assert (r.metric, r.shock, r.op, r.threshold, r.mode, r.asset) == ("bad_debt_at", 0.2, ">", 1e6, None, None)
    r = parse_rule("liquidated_at[30%,sequential]@wstETH>=2_500_000")
    assert (r.shock, r.mode, r.asset, r.op, r.threshold) == (0.3, "sequential", "wstETH", ">=", 2.5e6)
    r = parse_rule("liquidatable_now>0")
    assert (r.metric, r.op, r.threshold) == ("liquidatable_now", ">", 0.0)
    assert parse_rule("liquidatable_now_usd<1e5").metric == "liquidatable_now_usd"


@pytest.mark.parametrize("text,fragment", [
    ("", "empty"),
    ("cliff_inside=0.1", "unknown metric"),
    ("bad_debt_at[0.2]", "malformed"),
    ("bad_debt_at[1.5]>1", "must be in (0, 1)"),
    ("bad_debt_at[0]>1", "must be in (0, 1)"),
    ("bad_debt_at[0.2,fastest]>1", "mode 'fastest'"),
    ("liquidatable_now=>3", "malformed"),
    ("cliff_within>0.1", "malformed"),
])
def test_bad_rules_name_the_rule(text, fragment):
    with pytest.raises(InputError) as exc:
        parse_rule(text)
    assert fragment in str(exc.value)
    assert f"alert rule {text.strip()!r}" in str(exc.value) or text == ""


def test_required_shocks_and_assets():
    rules = parse_rules(["bad_debt_at[0.25]>1", "liquidated_at[0.2]@WETH>1", "cliff_within=0.4"])
    assert required_shocks(rules) == {0.25, 0.2}
    check_assets(rules, ["WETH"])
    with pytest.raises(InputError, match="no volatile asset"):
        check_assets(parse_rules(["bad_debt_at[0.2]>0"]), [])
    check_assets(parse_rules(["cliff_within=0.1", "liquidatable_now>0"]), [])
    with pytest.raises(InputError, match="asset 'WBTC' is not a volatile asset"):
        check_assets(parse_rules(["cliff_within@WBTC=0.1"]), ["WETH"])


def _report():
    scen = lambda shock, mode, liq, bad: {"shock": shock, "mode": mode, "liquidated_collateral_usd": liq,  # noqa: E731
                                          "bad_debt_usd": bad}
    return {
        "assets": {
            "WETH": {"cliffs": [{"trigger_shock": 0.12}, {"trigger_shock": 0.4}],
                     "scenarios": [scen(0.2, "sequential", 5e6, 1e5), scen(0.2, "equilibrium", 6e6, 3e5)]},
            "WBTC": {"cliffs": [], "scenarios": [scen(0.2, "sequential", 0.0, 0.0), scen(0.2, "equilibrium", 0.0, 0.0)]},
        },
        "market_wide": {"scenarios": [scen(0.2, "sequential", 9e6, 2e6), scen(0.2, "equilibrium", 8e6, 1.5e6)]},
        "liquidatable_now": {"count": 3, "debt_usd": 42_000.0},
    }


def test_evaluate():
    rules = parse_rules([
        "cliff_within=0.15", "cliff_within=0.1", "cliff_within@WBTC=0.9",
        "bad_debt_at[0.2]>1e6",                 # market-wide, worse mode: 2e6 -> fires
        "bad_debt_at[0.2,equilibrium]>1.6e6",   # 1.5e6 -> no
        "bad_debt_at[0.2]@WETH>2e5",            # worse of 1e5 / 3e5 -> fires
        "liquidated_at[0.2,sequential]@WETH<=5e6",
        "liquidatable_now>2", "liquidatable_now_usd>5e4",
    ])
    got = [(r.rule.text, r.fired, r.value) for r in evaluate(rules, _report())]
    assert got == [
        ("cliff_within=0.15", True, 0.12), ("cliff_within=0.1", False, 0.12), ("cliff_within@WBTC=0.9", False, None),
        ("bad_debt_at[0.2]>1e6", True, 2e6), ("bad_debt_at[0.2,equilibrium]>1.6e6", False, 1.5e6),
        ("bad_debt_at[0.2]@WETH>2e5", True, 3e5), ("liquidated_at[0.2,sequential]@WETH<=5e6", True, 5e6),
        ("liquidatable_now>2", True, 3.0), ("liquidatable_now_usd>5e4", False, 42_000.0),
    ]
    res = evaluate(parse_rules(["cliff_within=0.15"]), _report())[0]
    assert "12.0%" in res.message and res.to_dict()["fired"] is True


def test_evaluate_missing_shock_is_an_input_error():
    with pytest.raises(InputError, match="no scenario at shock 0.3"):
        evaluate(parse_rules(["bad_debt_at[0.3]>1"]), _report())
