/* Typed parameter parsing against a plugin's declared specs. */
#ifndef HVQ_CORE_PARAMS_H
#define HVQ_CORE_PARAMS_H

#include "plugin.h"

/* Parses text as the value of spec into *out (out->s points at text, which
 * must outlive out). On failure returns HVQ_E_INPUT and writes a reason
 * such as "expected an integer, got 'abc'" or "256000 is above the maximum
 * 65536" into why. */
hvq_status hvq_param_parse(const hvq_param_spec *spec, const char *text,
                           hvq_value *out, char *why, size_t why_len);

/* Number of declared parameters (specs up to the NULL name). */
size_t hvq_param_count(const hvq_param_spec *specs);

/* Index of name in specs, or -1. */
long hvq_param_index(const hvq_param_spec *specs, const char *name);

/* "int", "float", "bool", "string", "choice", "path". */
const char *hvq_param_type_name(hvq_param_type t);

/* Lookup used by host->param. */
const hvq_value *hvq_param_lookup(const hvq_params *p, const char *name);

#endif
