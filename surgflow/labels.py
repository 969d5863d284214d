"""Label vocabularies of the supported datasets (docs/DOMAIN.md section 4 and 5)."""
from __future__ import annotations

CHOLEC80_PHASES = [
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
]
CHOLEC80_TOOLS = ["Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag"]
# Instrument anticipation (Rivoir et al., MICCAI 2020): Grasper and Hook are excluded.
ANTICIPATION_INSTRUMENTS = ["Bipolar", "Scissors", "Clipper", "Irrigator", "SpecimenBag"]
# Median-frequency weights of the Cholec80 training set, in phase order (paper's code).
CHOLEC80_PHASE_WEIGHTS = [1.6411, 0.19091, 1.0, 0.25027, 1.9176, 0.98402, 2.1746]

AUTOLAPARO_PHASES = [
    "Preparation",
    "Dividing Ligament and Peritoneum",
    "Dividing Uterine Vessels and Ligament",
    "Transecting the Vagina",
    "Specimen Removal",
    "Suturing",
    "Washing",
]

CHOLEC80_FPS = 25.0
IGNORE_INDEX = -1  # label of frames without a phase (padding, unlabelled)
