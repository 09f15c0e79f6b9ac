"""Automation of the domain: sensors, schedules and the jobs they target. The composition root collects them."""

from sensors.lending import (
    lending_daily_job,
    lending_daily_schedule,
    lending_landing_sensor,
    lending_restatement_sensor,
)

all_sensors = [lending_landing_sensor, lending_restatement_sensor]
all_schedules = [lending_daily_schedule]
all_jobs = [lending_daily_job]
