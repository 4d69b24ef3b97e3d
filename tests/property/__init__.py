"""Property tier: hypothesis tests of the membership domain, in process, no servers."""
