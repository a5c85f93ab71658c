"""The SimPy engine: owns the clock, runs one process per patient, asks a trajectory source for
each next visit and records what happens as canonical events, writing itself the kinds of fact the
source does not author."""

from trajsim.engine.patient import PatientRecord
from trajsim.engine.reference import ReferenceSource
from trajsim.engine.simulate import simulate
from trajsim.engine.source import Fact, FactKind, PatientState, TrajectorySource, Visit

__all__ = ["Fact", "FactKind", "PatientRecord", "PatientState", "ReferenceSource", "TrajectorySource", "Visit",
           "simulate"]
