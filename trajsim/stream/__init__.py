"""Live mode: a simulated hospital whose events are sent to a FHIR server (and optionally as HL7v2
ADT messages over MLLP) as they happen, paced against the wall clock, with delivery statistics and
a dead-letter file for what was not acknowledged."""
