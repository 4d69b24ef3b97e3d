"""Seeded hostile input for the services' request subjects, and the plumbing to send it over NATS."""
