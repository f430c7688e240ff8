"""Stage 4 (rules/measure.smk): disc height and width, intervertebral distance, Pfirrmann grade
(docs/DESIGN.md definitions; docs/methods/endplates.md).

Everything is measured on the spine's own mid-sagittal surface (``midsagittal.find_midline``).
The label map (built-in or external) only says where each structure is; edges are located in
the image itself:

1. a first guess of each endplate per AP position, from the first step out of the marrow on
   profiles across the disc (``edges.fit_edge``; ``core.discs``);
2. the endplate curve refined on the raw pixels of the two slices around the mid-sagittal
   surface with a partial-volume model (``edges.fit_endplate``; ``endplate``), whose cortical
   thickness is estimated once per participant from all its sessions' endplates, with the
   signal of its band (``endplate.pooled_band``), unless the configuration fixes it;
3. the disc's AP ends fitted on the raw pixels beyond the vertebral walls, with a dark
   ligament of unknown thickness between the annulus and what lies beyond (``edges.fit_rim``;
   ``core.discs``).

``session`` puts them together per session, ``distance`` and ``pfirrmann`` add the vertebrae's
distances and the grades, ``qc`` gates what cannot be stood behind, ``step`` is the rule's.
"""
