"""Schedules: the pure tick arithmetic (:mod:`.ticks`) and the scheduler loop that runs beside
every worker (:mod:`.scheduler`)."""
