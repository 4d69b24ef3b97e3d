"""The wire contract (contract.md) as msgspec types."""
