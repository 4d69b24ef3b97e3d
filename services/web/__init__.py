"""The HTTP edge: the REST API, the dashboard's pages and the invitation link, over NATS; stateless."""
