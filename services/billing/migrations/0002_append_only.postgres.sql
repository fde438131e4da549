-- The ledger is append-only: a row once written is never changed or removed.
CREATE FUNCTION billing_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END
$$;
CREATE TRIGGER billing_ledger_no_change BEFORE UPDATE OR DELETE ON billing_ledger
FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
