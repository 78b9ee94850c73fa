"""`cloudland up`: the one place that wires store, API and controllers together."""
