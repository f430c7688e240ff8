"""Stage 6 (rules/register.smk): each disc's height change between the sessions."""
