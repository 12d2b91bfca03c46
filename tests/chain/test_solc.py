"""solc-js wrapper: compiles with both installed versions, reports errors, caches."""
from __future__ import annotations

import pytest

from defirisk.devnet import solc
from defirisk.errors import InputError

SRC = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.19;
contract Counter { uint256 public n; function bump(uint256 by) external { n += by; } }
"""


@pytest.mark.parametrize("version", ["0.8.37", "0.8.19"])
def test_compiles_and_deploys(version, anvil):
    out = solc.compile({"Counter.sol": SRC}, version=version)
    c = out["Counter"]
    assert out["Counter.sol:Counter"] is c
    assert {f["name"] for f in c.abi if f["type"] == "function"} == {"n", "bump"}
    sender = anvil.rpc("eth_accounts")[0]
    receipt = anvil.send_transaction({"from": sender, "data": c.bytecode})
    code = anvil.rpc("eth_getCode", receipt["contractAddress"], "latest")
    # Runtime code ends with solc's metadata, which is identical between creation and runtime output.
    assert code == c.deployed_bytecode


def test_compile_error_names_the_problem():
    with pytest.raises(InputError, match="compilation failed"):
        solc.compile({"Bad.sol": "pragma solidity ^0.8.0; contract B { function f() { x = 1; } }"})
