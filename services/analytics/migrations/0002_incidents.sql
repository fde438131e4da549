-- Anomaly incidents: a tenant's metric anomalous for one or more hours in a row. The
-- first hour notifies; the hours after it only extend the incident.
CREATE TABLE an_incidents (
    tenant TEXT NOT NULL,
    metric TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, metric)
);
