"""The gateway, in rooms by concern; imports only go down: cli > http > pipeline > backends > scheduler > workers > core."""
