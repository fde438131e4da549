-- The ledger is append-only: a row once written is never changed or removed.
CREATE TRIGGER billing_ledger_no_update BEFORE UPDATE ON billing_ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER billing_ledger_no_delete BEFORE DELETE ON billing_ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
