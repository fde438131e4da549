mod intake;
mod ledger;
mod support;
