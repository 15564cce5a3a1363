"""Pure planner."""
