"""Daily seat sync, daily incremental reconciliation, a weekly full sweep, daily subscription notices,
daily reports."""

import dagster as dg

from pipelines.billing.jobs import (billing_reports_job, organization_subscription_notice_job, reconcile_billing_job,
                                   seat_sync_job)

seat_sync_schedule = dg.ScheduleDefinition(
    name="seat_sync_schedule", job=seat_sync_job, cron_schedule="40 4 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING, description="Daily: seat_sync_job sets every live "
                                                                 "subscription's seat quantity from "
                                                                 "organization_members.")

reconcile_billing_schedule = dg.ScheduleDefinition(
    name="reconcile_billing_schedule", job=reconcile_billing_job, cron_schedule="10 2 * * *",
    execution_timezone="UTC", run_config={"ops": {"reconcile_billing": {"config": {"mode": "incremental"}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Incremental reconciliation from the Events API cursor, daily.")

reconcile_billing_full_schedule = dg.ScheduleDefinition(
    name="reconcile_billing_full_schedule", job=reconcile_billing_job, cron_schedule="10 3 * * 0",
    execution_timezone="UTC", run_config={"ops": {"reconcile_billing": {"config": {"mode": "full"}}}},
    default_status=dg.DefaultScheduleStatus.RUNNING, description="Weekly (Sunday): "
                                                                 "reconcile_billing_job as a full "
                                                                 "sweep of customers, subscriptions, "
                                                                 "invoices and PaymentIntents.")

organization_subscription_notice_schedule = dg.ScheduleDefinition(
    name="organization_subscription_notice_schedule", job=organization_subscription_notice_job,
    cron_schedule="0 9 * * *", execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="organization-subscription-required for company organisations past their grace period, daily.")

billing_reports_schedule = dg.ScheduleDefinition(
    name="billing_reports_schedule", job=billing_reports_job, cron_schedule="40 2 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="The billing assets, daily after reconciliation (their checks run with them).")

SCHEDULES = [seat_sync_schedule, reconcile_billing_schedule, reconcile_billing_full_schedule,
                 organization_subscription_notice_schedule, billing_reports_schedule]
