"""Run state and what follows from it: the model of one run, validation of untrusted files,
run discovery, comparison, and the Controller behind x/r/s. No Textual here."""
