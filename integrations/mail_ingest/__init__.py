"""Border-alert mail (issue 18, contract v2): the IEA/Border Force notification report sent to the
MOSOVO SPOC's mailbox, read from an IMAP mailbox (imap.py) or a forwarding rule's LMTP delivery
(lmtp.py), extracted by a template (template.py, extract.py) into `travel.border_alert` events
(process.py). What cannot be read is kept for a person (casewatch.ingest.inbound.keep)."""
