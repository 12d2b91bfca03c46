"""Chain access: pinned JSON-RPC client (rpc), Multicall3 batching (multicall), log scanning with a
resumable discovery cache (logs), ABI helpers (abi) and local anvil chains (anvil).
Nothing here connects at import time."""
