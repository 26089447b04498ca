"""The alert rules: pure functions of a case-state snapshot, a time and the trigger policy
(casewatch.model.policy). They import only casewatch.model and the standard library."""
