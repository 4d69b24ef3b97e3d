"""Unit tier: in-process tests of the membership domain and the pricing rule, no servers."""
