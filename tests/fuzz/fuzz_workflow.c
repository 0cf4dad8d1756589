/*  fuzz_workflow.c - libFuzzer target for the orchestrator's workflow
    definitions (broker/workflow.c): the first byte picks the door, the rest
    is the input.
      even: YAML text through wf_load_text (what a workflows folder holds);
      odd:  JSON or msgpack through the codec and wf_from_value (an inline
            workflow from a client, in either dialect's key casing).
    A definition that loads is turned back into a tree (wf_to_value,
    wf_to_definition), read again (it must load: what a session stores must
    resume), cloned, and each step's request is built with the input itself
    as the configuration and no earlier results (errors are fine, crashes
    and leaks are not). Seeds: tests/fuzz/corpus/workflow (the shipped
    definitions and inline shapes), regressions: tests/fuzz/regressions/workflow. */
#include "sdx_catalog.h"
#include "sdx_codec.h"
#include "sdx_envelope.h"
#include "workflow.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sdx_catalog_t *s_cat;

static const sdx_value_t *s_none(void *ud, const char *step)
{
    (void)ud;
    (void)step;
    return NULL;
}

static int s_models(void *ud, const char *name)
{
    (void)ud;
    return strcmp(name, "missing") == 0 ? 0 : 1;
}

static void s_exercise(workflow_t *w, const sdx_value_t *config)
{
    char err[512];
    sdx_value_t *v = wf_to_value(w);
    sdx_value_t *def = wf_to_definition(w);
    workflow_t *back = def ? wf_from_value(def, s_cat, NULL, NULL, err, sizeof err) : NULL;
    if (def && !back) {
        fprintf(stderr, "a loaded workflow does not read back from its definition: %s\n", err);
        abort();
    }
    workflow_t *c = wf_clone(w);
    for (size_t i = 0; c && i < c->nsteps; i++) {
        sdx_value_t *rq = wf_step_request(&c->steps[i], config, s_none, NULL, err, sizeof err);
        sdx_value_destroy(&rq);
    }
    wf_destroy(&c);
    wf_destroy(&back);
    sdx_value_destroy(&def);
    sdx_value_destroy(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_cat) {
        char err[256];
        if (sdx_actions_load_default(err, sizeof err) != 0 ||
            !(s_cat = sdx_catalog_load_default(err, sizeof err))) {
            fprintf(stderr, "fuzz_workflow: %s\n", err);
            abort();
        }
    }
    if (size < 1)
        return 0;
    char err[512];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    if ((data[0] & 1) == 0) {
        workflow_t *w = wf_load_text((const char *)p, n, "fuzz.yaml", s_cat, s_models, NULL, err,
                                     sizeof err);
        if (w)
            s_exercise(w, NULL);
        wf_destroy(&w);
        return 0;
    }
    sdx_value_t *v = sdx_codec_decode(p, n, sdx_codec_detect(p, n), err, sizeof err);
    if (!v)
        return 0;
    workflow_t *w = wf_from_value(v, s_cat, s_models, NULL, err, sizeof err);
    if (w)
        s_exercise(w, sdx_map_get(v, "parameters"));
    wf_destroy(&w);
    sdx_value_destroy(&v);
    return 0;
}
