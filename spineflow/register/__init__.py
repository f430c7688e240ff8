"""Stage 5 (rules/register.smk): ses-2 registered rigidly onto ses-1, whole field then per
vertebra (docs/methods/registration.md).

Conventions (ITK's, because the .tfm files are ITK's):

- Physical points are LPS millimetres (ITK/DICOM). nibabel affines are RAS: convert with
  ``core.itk.ras_to_lps`` / ``lps_to_ras`` (negate x and y) before/after using a transform.
- The written transform maps *fixed-space* points to *moving-space* points (the direction
  resampling needs: out(x) = moving(T(x))). To move a landmark from session 2 into session 1,
  use the inverse.

The multi-resolution pyramid is built here (``whole_field``) rather than by
ImageRegistrationMethod, because SimpleITK's SetShrinkFactorsPerLevel shrinks every axis by the
same factor, which would reduce ~15 thick (3.3 mm) sagittal slices to 3.
"""
