"""The closed loop: routing, SLA clocks and the background jobs that drive them."""
