-- Invoices: one per tenant per calendar month (UTC), closed once the month is over
-- and never changed after. `cutoff_ms` is when it closed: it holds the month's entries
-- the ledger had by then (and earlier months' that arrived after their own invoice
-- closed, as late lines); what arrives later goes on the next.
CREATE TABLE billing_invoices (
    tenant_id TEXT NOT NULL,
    month TEXT NOT NULL,
    period_start_ms BIGINT NOT NULL,
    period_end_ms BIGINT NOT NULL,
    cutoff_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month)
);
CREATE TABLE billing_invoice_lines (
    tenant_id TEXT NOT NULL,
    month TEXT NOT NULL,
    line_no BIGINT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    currency TEXT NOT NULL,
    late BIGINT NOT NULL,
    calls BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, month, line_no)
);
CREATE FUNCTION billing_invoice_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a closed invoice never changes';
END
$$;
CREATE TRIGGER billing_invoices_no_change BEFORE UPDATE OR DELETE ON billing_invoices
FOR EACH ROW EXECUTE FUNCTION billing_invoice_closed();
CREATE TRIGGER billing_invoice_lines_no_change BEFORE UPDATE OR DELETE ON billing_invoice_lines
FOR EACH ROW EXECUTE FUNCTION billing_invoice_closed();
