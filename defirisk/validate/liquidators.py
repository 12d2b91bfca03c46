"""Liquidations on the fork through each protocol's real entry point, one protocol per class.

Each class finds liquidatable positions from the CHAIN (not from the model) and liquidates one once:
- Aave V3: `getUserAccountData` health factor < 1 with collateral left (the protocol's own check);
  `liquidationCall(collateral, debt, user, type(uint256).max, false)`: the pool caps the repayment
  at its close factor. The reserves are chosen as docs/model.md says (largest debt USD value, largest
  collateral USD value among usable collateral, ties to the alphabetically first symbol).
- Morpho Blue: Morpho's `_isHealthy` recomputed from `position`, `market` and the oracle's `price()`
  after `accrueInterest`; `liquidate` repaying all borrow shares, or seizing all collateral when that
  repayment would seize more than the position holds.
Amounts are measured on chain (balance changes and the protocol's own events), in base units, and
turned into whole tokens and USD (at the oracle prices of that moment) only in the returned record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from eth_abi import decode
from eth_utils import keccak

from defirisk.errors import ChainError
from defirisk.model import Snapshot
from defirisk.validate.fork import ForkChain
from defirisk.validate.funding import Funder

MAX_UINT = 2**256 - 1
WAD = 10**18
ORACLE_PRICE_SCALE = 10**36
VIRTUAL_SHARES, VIRTUAL_ASSETS = 10**6, 1
LIQUIDATION_CURSOR = 3 * 10**17
MAX_LIQUIDATION_INCENTIVE_FACTOR = 115 * 10**16
HF_ONE = 10**18
MORPHO_PARAMS = "(address,address,address,address,uint256)"
RESERVE_DATA = ("(uint256,uint128,uint128,uint128,uint128,uint128,uint40,uint16,address,address,address,address,"
                "uint128,uint128,uint128)")
LIQUIDATION_CALL_TOPIC = "0x" + keccak(text="LiquidationCall(address,address,address,uint256,uint256,address,bool)").hex()
LIQUIDATE_TOPIC = "0x" + keccak(text="Liquidate(bytes32,address,address,uint256,uint256,uint256,uint256,uint256)").hex()


@dataclass(frozen=True)
class Liquidation:
    """One executed liquidation call; amounts in base units, USD at the oracle prices it used."""

    protocol: str
    market: str
    account: str
    collateral_asset: str
    collateral_seized: int  # taken from the borrower (Aave: includes the protocol fee)
    collateral_received: int  # what the liquidator got and will sell
    debt_asset: str
    debt_repaid: int
    collateral_usd_price: float
    debt_usd_price: float
    bad_debt_usd: float


class _Base:
    protocol = ""

    def __init__(self, chain: ForkChain, snapshot: Snapshot, funder: Funder, liquidator: str):
        self.chain, self.snapshot, self.funder, self.liquidator = chain, snapshot, funder, liquidator
        self._approved: set[tuple[str, str]] = set()
        # Seized collateral the liquidator holds for this round's sale (token -> base units), shared by
        # all liquidators: it must not pay for a later liquidation, or the sale would come up short.
        self.held: dict[str, int] = {}

    def _dec(self, sym: str) -> int:
        return self.snapshot.assets[sym].decimals

    def _ensure(self, token: str, spender: str, amount: int) -> None:
        """Liquidator holds >= amount of token and has approved spender."""
        have = self.funder.balance(token, self.liquidator) - self.held.get(token.lower(), 0)
        if have < amount:
            self.funder.give(token, self.liquidator, amount - have)
        if (token.lower(), spender.lower()) not in self._approved:
            self.chain.send(self.liquidator, token, "approve(address,uint256)", spender, MAX_UINT, label="approve")
            self._approved.add((token.lower(), spender.lower()))


class AaveLiquidator(_Base):
    protocol = "aave-v3"

    def __init__(self, chain, snapshot, funder, liquidator, market: str):
        super().__init__(chain, snapshot, funder, liquidator)
        m = snapshot.market("aave-v3", market)
        self.market = market
        self.pool, self.oracle = m.params["pool"], m.params["oracle"]
        f = snapshot.positions.frame
        self.accounts = sorted(set(f.loc[(f["protocol"] == "aave-v3") & (f["market"] == market), "account"]))
        self.reserves: dict[str, dict] = {}
        for sym in sorted(m.assets):
            token = m.assets[sym].get("address") or snapshot.assets[sym].address
            rd = chain.call(self.pool, "getReserveData(address)", [token], [RESERVE_DATA])
            config = rd[0]
            self.reserves[sym] = {"token": token, "id": rd[7], "a_token": rd[8], "stable": rd[9], "variable": rd[10],
                                  "lt": (config >> 16) & 0xFFFF, "emode": (config >> 168) & 0xFF}
        self.base_unit = chain.call(self.oracle, "BASE_CURRENCY_UNIT()", (), ["uint256"])

    def account_data(self, users: list[str]) -> list[tuple]:
        sig = "getUserAccountData(address)"
        return self.chain.call_many([(self.pool, sig, [u], ["uint256"] * 6) for u in users])

    def find(self) -> list[str]:
        out = []
        for u, d in zip(self.accounts, self.account_data(self.accounts)):
            total_coll, total_debt, hf = d[0], d[1], d[5]
            if total_debt > 0 and total_coll > 0 and hf < HF_ONE:
                out.append(u)
        return out

    def _state(self, user: str) -> dict:
        syms = list(self.reserves)
        calls = []
        for s in syms:
            r = self.reserves[s]
            calls += [(r["a_token"], "balanceOf(address)", [user], ["uint256"]),
                      (r["variable"], "balanceOf(address)", [user], ["uint256"]),
                      (r["stable"], "balanceOf(address)", [user], ["uint256"]),
                      (self.oracle, "getAssetPrice(address)", [r["token"]], ["uint256"])]
        calls += [(self.pool, "getUserConfiguration(address)", [user], ["uint256"]),
                  (self.pool, "getUserEMode(address)", [user], ["uint256"])]
        res = self.chain.call_many(calls)
        st = {s: {"coll": res[4 * i], "debt": res[4 * i + 1] + res[4 * i + 2], "price": res[4 * i + 3]}
              for i, s in enumerate(syms)}
        return {"reserves": st, "config": res[-2], "emode": res[-1]}

    def liquidate(self, user: str) -> Liquidation:
        st = self._state(user)
        emode, config = st["emode"], st["config"]
        best_d = best_c = None
        # Float values computed like the model's (whole tokens x USD) so exact ties break the same way.
        for sym in sorted(st["reserves"]):
            r, meta = st["reserves"][sym], self.reserves[sym]
            price = r["price"] / self.base_unit
            dval = r["debt"] / 10 ** self._dec(sym) * price
            if r["debt"] > 0 and (best_d is None or dval > best_d[1]):
                best_d = (sym, dval)
            usable = (config >> (2 * meta["id"] + 1)) & 1 and (meta["lt"] > 0 or (emode and meta["emode"] == emode))
            cval = r["coll"] / 10 ** self._dec(sym) * price
            if usable and r["coll"] > 0 and (best_c is None or cval > best_c[1]):
                best_c = (sym, cval)
        if best_d is None or best_c is None:
            raise ChainError(f"aave-v3/{self.market}: {user} is liquidatable but has no debt or usable collateral")
        dsym, csym = best_d[0], best_c[0]
        d, c = self.reserves[dsym], self.reserves[csym]
        before_user = st["reserves"]
        self._ensure(d["token"], self.pool, before_user[dsym]["debt"] + 1)
        receipt = self.chain.send(self.liquidator, self.pool, "liquidationCall(address,address,address,uint256,bool)",
                                  c["token"], d["token"], user, MAX_UINT, False, gas=3_000_000,
                                  label=f"aave-v3 liquidationCall {user}")
        # The event's amounts are what the liquidator paid and received (net of the protocol fee);
        # balance differences would net out when collateral and debt are the same token.
        (data,) = _event_data(receipt, self.pool, LIQUIDATION_CALL_TOPIC, f"aave-v3 liquidationCall {user}")
        paid, received, _who, _atoken = decode(["uint256", "uint256", "address", "bool"], data)
        after = self._state(user)["reserves"]
        total_coll, total_debt = self.account_data([user])[0][:2]
        bad = total_debt / self.base_unit if total_coll == 0 else 0.0
        return Liquidation(self.protocol, self.market, user, csym, before_user[csym]["coll"] - after[csym]["coll"],
                           received, dsym, paid,
                           before_user[csym]["price"] / self.base_unit, before_user[dsym]["price"] / self.base_unit, bad)


def _event_data(receipt: dict, emitter: str, topic: str, label: str) -> list[bytes]:
    """Data of the one log of `topic` emitted by `emitter` in the receipt."""
    logs = [bytes.fromhex(lg["data"][2:]) for lg in receipt["logs"]
            if lg["topics"] and lg["topics"][0].lower() == topic and lg["address"].lower() == emitter.lower()]
    if len(logs) != 1:
        raise ChainError(f"{label}: expected one {topic[:10]} event from {emitter}, got {len(logs)}")
    return logs


def _to_assets_up(shares: int, assets: int, total: int) -> int:
    num, den = shares * (assets + VIRTUAL_ASSETS), total + VIRTUAL_SHARES
    return (num + den - 1) // den


def _to_assets_down(shares: int, assets: int, total: int) -> int:
    return shares * (assets + VIRTUAL_ASSETS) // (total + VIRTUAL_SHARES)


def incentive_factor_wad(lltv: int) -> int:
    """Morpho's min(1.15, 1 / (1 - 0.3 (1 - lltv))) in wad, with Morpho's own rounding."""
    return min(MAX_LIQUIDATION_INCENTIVE_FACTOR, WAD * WAD // (WAD - LIQUIDATION_CURSOR * (WAD - lltv) // WAD))


class MorphoLiquidator(_Base):
    protocol = "morpho-blue"

    def __init__(self, chain, snapshot, funder, liquidator, morpho: str, market: str,
                 usd: Callable[[str], float]):
        super().__init__(chain, snapshot, funder, liquidator)
        m = snapshot.market("morpho-blue", market)
        self.morpho, self.market, self.usd = morpho, market, usd
        self.id = bytes.fromhex(str(m.params["id"])[2:])
        self.coll_sym, self.loan_sym = m.params["collateral"], m.params["loan"]
        self.params = tuple(chain.call(morpho, "idToMarketParams(bytes32)", [self.id],
                                       ["address", "address", "address", "address", "uint256"]))
        if int(self.params[0], 16) == 0:
            raise ChainError(f"morpho-blue/{market}: market id {m.params['id']} unknown to Morpho at {morpho}")
        f = snapshot.positions.frame
        self.accounts = sorted(set(f.loc[(f["protocol"] == "morpho-blue") & (f["market"] == market), "account"]))

    def _reads(self, users: list[str]) -> tuple[tuple, int, list[tuple]]:
        calls = [(self.morpho, "market(bytes32)", [self.id], ["uint128"] * 6),
                 (self.params[2], "price()", (), ["uint256"])]
        calls += [(self.morpho, "position(bytes32,address)", [self.id, u], ["uint256", "uint128", "uint128"]) for u in users]
        res = self.chain.call_many(calls)
        return res[0], res[1], res[2:]

    def find(self) -> list[str]:
        # Interest up to the (frozen) fork timestamp, as Morpho itself does first in liquidate().
        self.chain.send(self.liquidator, self.morpho, f"accrueInterest({MORPHO_PARAMS})", self.params,
                        label=f"morpho-blue accrueInterest {self.market}")
        mkt, price, positions = self._reads(self.accounts)
        tba, tbs, lltv = mkt[2], mkt[3], self.params[4]
        out = []
        for u, (_supply, shares, coll) in zip(self.accounts, positions):
            if shares == 0:
                continue
            borrowed = _to_assets_up(shares, tba, tbs)
            max_borrow = coll * price // ORACLE_PRICE_SCALE * lltv // WAD
            if max_borrow < borrowed:
                out.append(u)
        return out

    def liquidate(self, user: str) -> Liquidation:
        mkt, price, [(_s, shares, coll)] = self._reads([user])
        tba, tbs = mkt[2], mkt[3]
        lif = incentive_factor_wad(self.params[4])
        seize_all_debt = _to_assets_down(shares, tba, tbs) * lif // WAD * ORACLE_PRICE_SCALE // price
        if seize_all_debt <= coll:
            seized_arg, shares_arg = 0, shares
        else:
            seized_arg, shares_arg = coll, 0
        loan, collateral = self.params[0], self.params[1]
        self._ensure(loan, self.morpho, _to_assets_up(shares, tba, tbs) + 1)
        recv0 = self.funder.balance(collateral, self.liquidator)
        receipt = self.chain.send(self.liquidator, self.morpho, f"liquidate({MORPHO_PARAMS},address,uint256,uint256,bytes)",
                                  self.params, user, seized_arg, shares_arg, b"", gas=2_000_000,
                                  label=f"morpho-blue liquidate {self.market} {user}")
        (data,) = _event_data(receipt, self.morpho, LIQUIDATE_TOPIC, f"morpho-blue liquidate {user}")
        repaid, _rs, seized, bad_assets, _bs = decode(["uint256"] * 5, data)
        received = self.funder.balance(collateral, self.liquidator) - recv0
        if received != seized:
            raise ChainError(f"morpho-blue liquidate {user}: Liquidate says {seized} seized, liquidator got {received}")
        pl = self.usd(self.loan_sym)
        return Liquidation(self.protocol, self.market, user, self.coll_sym, seized, received, self.loan_sym, repaid,
                           self.usd(self.coll_sym), pl, bad_assets / 10 ** self._dec(self.loan_sym) * pl)
