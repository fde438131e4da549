mod budgets;
mod intake;
mod invoices;
mod ledger;
mod support;
