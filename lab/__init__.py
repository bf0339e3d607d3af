"""Training and evaluating our small SAM 2 on seeded synthetic videos with exact masks."""
