"""Contract interfaces from the project's `abis/*.json`, encoded and decoded with eth_abi directly.

web3's contract objects are ~7x slower than eth_abi and validate on every call; the readers encode
tens of thousands of calls per snapshot. Functions whose outputs are all static words (uint, int,
address, bool, bytes32) take a fast path that slices 32-byte words without eth_abi.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import eth_abi
from eth_utils import keccak, to_checksum_address

from defirisk.errors import InputError

ABI_DIR = Path(__file__).resolve().parents[2] / "abis"


class AbiDecodeError(ValueError):
    """Return data that does not fit the expected ABI (wrong interface, empty return from an EOA)."""


def canonical_type(param: dict) -> str:
    typ = param["type"]
    if typ.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple'):]}"
    return typ


@functools.lru_cache(maxsize=1 << 20)
def checksum(address: str) -> str:
    """EIP-55 form; cached because the same accounts and tokens come back many times."""
    return to_checksum_address(address)


def _static_word_decoder(typ: str):
    """A decoder for one 32-byte word of a static elementary type, or None for anything else."""
    if typ.startswith("uint"):
        return lambda w: int.from_bytes(w, "big")
    if typ.startswith("int"):
        return lambda w: int.from_bytes(w, "big", signed=True)
    if typ == "address":
        return lambda w: checksum("0x" + w[12:].hex())
    if typ == "bool":
        return lambda w: w[31] == 1
    if typ == "bytes32":
        return lambda w: bytes(w)
    return None


def _flatten_static(param: dict) -> list | None:
    """Word decoders for a parameter that is a static type (possibly a static tuple), else None."""
    typ = param["type"]
    if typ == "tuple":
        out = []
        for comp in param["components"]:
            sub = _flatten_static(comp)
            if sub is None:
                return None
            out.extend(sub)
        return [("tuple", out)]
    dec = _static_word_decoder(typ)
    return None if dec is None else [dec]


def _enc_address(a: Any) -> bytes:
    if not (isinstance(a, str) and len(a) == 42 and a[:2] in ("0x", "0X")):
        raise ValueError("not a 0x address")
    return bytes(12) + bytes.fromhex(a[2:])


def _enc_uint(v: Any) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("not an int")
    return v.to_bytes(32, "big")  # raises OverflowError on negatives / > 2**256


def _enc_bytes32(v: Any) -> bytes:
    if not isinstance(v, (bytes, bytearray)) or len(v) != 32:
        raise ValueError("not 32 bytes")
    return bytes(v)


# Static input types encoded without eth_abi (each one 32-byte word). Narrow uints (uint8, uint16)
# are not here: eth_abi checks their range.
_FAST_IN = {"address": _enc_address, "uint256": _enc_uint, "bytes32": _enc_bytes32}


@dataclass(frozen=True)
class Function:
    name: str
    signature: str
    selector: bytes
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    output_names: tuple[str, ...]
    _static_layout: Any = field(default=None, repr=False, compare=False)

    def encode(self, *args: Any) -> bytes:
        if len(args) != len(self.input_types):
            raise InputError(f"{self.signature} takes {len(self.input_types)} arguments, got {len(args)}")
        if not args:
            return self.selector
        if all(t in _FAST_IN for t in self.input_types):
            # Hot path (an account or a reserve address per call): eth_abi costs ~100 us per call.
            try:
                return self.selector + b"".join(_FAST_IN[t](a) for t, a in zip(self.input_types, args))
            except (ValueError, TypeError, OverflowError, AttributeError):
                pass  # fall through to eth_abi for its precise error message
        return self.selector + eth_abi.encode(self.input_types, args)

    def decode(self, data: bytes) -> Any:
        """Decoded outputs: a single value for one output, else a tuple. Raises AbiDecodeError."""
        if self._static_layout is not None:
            words = self._static_layout[1]
            if len(data) < 32 * words:
                raise AbiDecodeError(f"{self.signature} returned {len(data)} bytes, expected >= {32 * words}")
            pos = [0]

            def walk(layout):
                vals = []
                for item in layout:
                    if isinstance(item, tuple):
                        vals.append(tuple(walk(item[1])))
                    else:
                        vals.append(item(data[pos[0]:pos[0] + 32]))
                        pos[0] += 32
                return vals

            values = walk(self._static_layout[0])
        else:
            try:
                values = eth_abi.decode(self.output_types, bytes(data))
            except Exception as exc:  # eth_abi raises several types; all mean "not this interface"
                raise AbiDecodeError(f"{self.signature} returned undecodable data ({len(data)} bytes): {exc}") from None
            values = [_checksum_addresses(t, v) for t, v in zip(self.output_types, values)]
        if len(values) == 1:
            return values[0]
        return tuple(values)


def _checksum_addresses(typ: str, value: Any) -> Any:
    if typ == "address":
        return checksum(value)
    if typ == "address[]":
        return [checksum(v) for v in value]
    return value


@dataclass(frozen=True)
class Event:
    name: str
    signature: str
    topic0: str  # 0x-prefixed hex
    inputs: tuple[dict, ...]

    def decode_log(self, log: dict) -> dict:
        """Decode an eth_getLogs entry into {name: value} (indexed and data arguments)."""
        topics = log["topics"]
        if not topics or topics[0].lower() != self.topic0:
            raise AbiDecodeError(f"log is not a {self.signature} event")
        indexed = [p for p in self.inputs if p.get("indexed")]
        plain = [p for p in self.inputs if not p.get("indexed")]
        out: dict[str, Any] = {}
        for p, topic in zip(indexed, topics[1:]):
            typ = canonical_type(p)
            raw = bytes.fromhex(topic[2:])
            out[p["name"]] = _checksum_addresses(typ, eth_abi.decode([typ], raw)[0]) \
                if typ in ("address", "bool") or typ.startswith(("uint", "int", "bytes")) else raw
        data = bytes.fromhex(log["data"][2:]) if log.get("data", "0x") != "0x" else b""
        if plain:
            types = [canonical_type(p) for p in plain]
            values = eth_abi.decode(types, data)
            for p, t, v in zip(plain, types, values):
                out[p["name"]] = _checksum_addresses(t, v)
        return out


class Interface:
    """One contract interface (one JSON ABI file)."""

    def __init__(self, name: str, abi: Sequence[dict]):
        self.name = name
        self.functions: dict[str, Function] = {}
        self.events: dict[str, Event] = {}
        for item in abi:
            if item.get("type") == "function":
                ins = tuple(canonical_type(p) for p in item.get("inputs", []))
                outs = tuple(canonical_type(p) for p in item.get("outputs", []))
                sig = f"{item['name']}({','.join(ins)})"
                layout = None
                flat = [_flatten_static(p) for p in item.get("outputs", [])]
                if outs and all(f is not None for f in flat):
                    items = [x for f in flat for x in f]
                    layout = (items, _count_words(items))
                self.functions[item["name"]] = Function(
                    item["name"], sig, keccak(text=sig)[:4], ins, outs,
                    tuple(p.get("name", "") for p in item.get("outputs", [])), layout)
            elif item.get("type") == "event":
                ins = tuple(item.get("inputs", []))
                sig = f"{item['name']}({','.join(canonical_type(p) for p in ins)})"
                self.events[item["name"]] = Event(item["name"], sig, "0x" + keccak(text=sig).hex(), ins)

    def fn(self, name: str) -> Function:
        try:
            return self.functions[name]
        except KeyError:
            raise InputError(f"interface {self.name} has no function {name!r}") from None

    def event(self, name: str) -> Event:
        try:
            return self.events[name]
        except KeyError:
            raise InputError(f"interface {self.name} has no event {name!r}") from None

    def __repr__(self) -> str:
        return f"Interface({self.name!r})"


def _count_words(items: list) -> int:
    return sum(_count_words(i[1]) if isinstance(i, tuple) else 1 for i in items)


@functools.lru_cache(maxsize=None)
def interface(name: str) -> Interface:
    """Load `abis/<name>.json`."""
    path = ABI_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError(f"no ABI file {path}")
    return Interface(name, json.loads(path.read_text()))
