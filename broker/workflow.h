/*  workflow.h - workflow definitions for the broker's orchestrator: YAML
    files in a workflows directory (libyaml), loaded at start-up and on
    SIGHUP, and ad-hoc workflows sent inline by a client (the seeds'
    `{workflow_id, steps: [{type, operation, parameters}]}`).

    A definition (one YAML document per file, `<dir>/<name>.yaml` or `.yml`):

      id: sdxl_txt2img                  # required, [A-Za-z0-9_.-]{1,63}
      name: SDXL text to image          # default: the id
      description: ...
      estimated_duration_ms: 20000      # or estimated_duration: "00:00:20"
      resource_requirements:            # free-form map, kept as given; two
        gpu_memory_mb: 8000             #   keys are read: gpu_memory_mb and
        domains: [conditioning, inference, postprocessing]   # domains
      steps:
        - id: encode                    # default "step<N>" (N from 1)
          type: conditioning            # the domain
          operation: encode_prompt      # the verb; aliases resolve through
                                        #   proto/actions.json (get_status
                                        #   -> device.status)
          parameters: {...}             # any YAML map (the request's data)
          required_models: [name, ...]
          inputs:                       # target -> reference
            "*": ${config}              # "*": merge that map into parameters
            embeddings: ${steps.encode.tensors}
            image: ${steps.denoise.images[0].data}
          retry: 1                      # re-runs of a failed step (0..5, default 0)
          timeout_ms: 120000            # 0/absent: the broker default

    References: `${config}` (the configuration the session was started
    with), `${config.a.b}`, `${steps.<id>}` (that step's reply data),
    `${steps.<id>.a.b[0].c}`. A target is a dotted path into parameters
    ("hyperparameters.seed"); "*" merges a map (the reference's keys win
    over parameters', recursively where both sides are maps). Steps run in the order listed; a reference may only
    name an earlier step, and a cycle between steps is reported as one.

    Not here: running workflows (orch.c), the model catalogue (a callback). */
#ifndef BROKER_WORKFLOW_H
#define BROKER_WORKFLOW_H

#include "sdx_catalog.h"
#include "sdx_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WF_ID_MAX 64
#define WF_MAX_STEPS 64

typedef struct {
    char *target;  /* "*" or a dotted path into parameters (owned) */
    char *ref;     /* the reference text as written, "${steps.x.y}" (owned) */
    char *step;    /* referenced step id, NULL for ${config...} (owned) */
    char *path;    /* path after the step / config, "" for the whole (owned) */
} wf_input_t;

typedef struct {
    char id[WF_ID_MAX];
    char type[32];          /* domain */
    char operation[64];     /* verb as written */
    char message_type[96];  /* canonical domain.verb */
    sdx_value_t *parameters; /* owned map, never NULL */
    char **required_models;  /* owned */
    size_t nrequired;
    wf_input_t *inputs;
    size_t ninputs;
    int retry;
    int64_t timeout_ms;
    int line; /* 1-based line of the step in its file, 0 for inline */
} wf_step_t;

typedef struct {
    char id[WF_ID_MAX];
    char *name, *description; /* owned, never NULL */
    char file[512];            /* "" for inline */
    wf_step_t *steps;
    size_t nsteps;
    sdx_value_t *resource_requirements; /* owned map, never NULL */
    int64_t gpu_memory_mb;               /* from resource_requirements, 0 none */
    char domains[8][32];                 /* required domains: listed ones plus every step's */
    int ndomains;
    int64_t estimated_duration_ms;
} workflow_t;

/* Answers whether a model name exists (1), does not (0), or cannot be
   known (-1: no catalogue registered; the check is skipped). */
typedef int (*wf_model_check_fn)(void *ud, const char *name);

/* Told about each file that was refused: "<file>:<line>: <reason>". */
typedef void (*wf_report_fn)(void *ud, const char *file, int line, const char *reason);

typedef struct {
    workflow_t **items; /* owned, sorted by id */
    size_t n;
} wf_set_t;

/* Load every *.yaml / *.yml file of dir into out (replacing nothing: out
   must be empty). A bad file (YAML error, unknown domain or operation per
   the catalogue, unknown field, a cycle or forward reference in inputs, a
   missing model per check, a duplicate id) is refused and reported through
   report; the others load. Returns the number of refused files, or -1 when
   dir cannot be read (err). */
int wf_load_dir(const char *dir, const sdx_catalog_t *cat, wf_model_check_fn check, void *check_ud,
                wf_report_fn report, void *report_ud, wf_set_t *out, char *err, size_t err_len);

/* One file (for tests and tools). NULL + err ("file:line: reason"). */
workflow_t *wf_load_file(const char *path, const sdx_catalog_t *cat, wf_model_check_fn check,
                         void *check_ud, char *err, size_t err_len);
/* The same from YAML text (file names the source in errors). */
workflow_t *wf_load_text(const char *text, size_t len, const char *file, const sdx_catalog_t *cat,
                         wf_model_check_fn check, void *check_ud, char *err, size_t err_len);

/* An inline workflow from a request's data: {workflow_id?, name?, steps:
   [{type, operation, parameters?, required_models?, inputs?, retry?,
   timeout_ms?, id?}], resource_requirements?, ...}. Keys match loosely
   (WorkflowId, workflowId, workflow_id), so C# and native both work. The
   same rules as files; err names the field ("steps[1].type: unknown
   domain \"gpu\" (domains: ...)"). NULL + err. */
workflow_t *wf_from_value(const sdx_value_t *v, const sdx_catalog_t *cat, wf_model_check_fn check,
                          void *check_ud, char *err, size_t err_len);

/* Build a step's request data: a clone of its parameters with its inputs
   applied; lookup(ud, step_id) returns that step's reply data (borrowed,
   NULL if it has none), config is the session configuration (may be NULL).
   NULL + err ("steps.denoise: input image: ${steps.encode.tensorz}: no
   key tensorz") when a reference does not resolve. Caller owns. */
typedef const sdx_value_t *(*wf_lookup_fn)(void *ud, const char *step_id);
sdx_value_t *wf_step_request(const wf_step_t *s, const sdx_value_t *config, wf_lookup_fn lookup,
                             void *ud, char *err, size_t err_len);
/* The same; with move, the bins (tensors, images) of the earlier steps'
   replies that the inputs read are moved into the request instead of
   copied, and those replies are left with empty bins: the caller must not
   use them again (the orchestrator re-reads them from where it stored
   them). A part that two inputs read is copied. The configuration is
   never moved from. */
sdx_value_t *wf_step_request_move(const wf_step_t *s, const sdx_value_t *config,
                                  wf_lookup_fn lookup, void *ud, bool move, char *err,
                                  size_t err_len);

/* The definition as a reply tree, with names that PascalCase to the C#
   DTOs: {workflow_id, name, description, steps: [{id, type, operation,
   message_type, parameters, required_models, inputs {target: ref}, retry,
   timeout_ms}], resource_requirements, estimated_duration ("hh:mm:ss", a
   .NET TimeSpan), estimated_duration_ms, file}. Caller owns; NULL on OOM. */
sdx_value_t *wf_to_value(const workflow_t *w);

/* The definition as a tree that wf_from_value reads back into the same
   workflow (wf_to_value without the derived keys: file, the TimeSpan text,
   each step's message_type). What the orchestrator stores with a session,
   so that it resumes with the definition it started with. Caller owns. */
sdx_value_t *wf_to_definition(const workflow_t *w);

/* Deep copy (sessions keep their own copy of an inline or reloaded workflow). */
workflow_t *wf_clone(const workflow_t *w);

const workflow_t *wf_set_find(const wf_set_t *set, const char *id);
void wf_set_clear(wf_set_t *set);
void wf_destroy(workflow_t **w);

#endif
