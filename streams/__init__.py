"""The Kafka side of newsflow: Faust app, topics, record schemas, settings and the CLI."""
