/*  sdx_worker_priv.h - what the command-line side of the worker
    (sdx_worker_cli.c: argv, --config, domain options, GPU selection) needs
    of the worker object beyond its public face in sdx_worker.h. Both files
    are the runtime; handlers never include this.
*/
#ifndef SDX_WORKER_PRIV_H
#define SDX_WORKER_PRIV_H

#include "sdx_gpu.h"
#include "sdx_worker.h"

#include <stddef.h>

/* "models-root" -> "models_root": an option's config key. */
void sdx_worker_config_key(const char *name, char *out, size_t len);

/* Hand the worker the domain's resolved options: values[i] (malloc'd, NULL
   where unset) and from[i] ("flag", "config", "env", "default"), parallel
   to domain->options; the worker owns both arrays from here on (status
   reports them). config_path: the --config file, or NULL. */
void sdx_worker_priv_adopt_options(sdx_worker_t *w, size_t n, char **values, const char **from,
                                   const char *config_path);
/* The i-th resolved option's text (NULL when unset) and where it came from. */
const char *sdx_worker_priv_option(const sdx_worker_t *w, size_t i, const char **from);
/* The --config file given, or NULL. */
const char *sdx_worker_priv_config_path(const sdx_worker_t *w);
/* Keep an NVML handle for the selected GPU (status reports its memory);
   the worker owns it. */
void sdx_worker_priv_set_gpu_probe(sdx_worker_t *w, sdx_gpu_t *g);
/* The domain's option hook is about to run: destroy runs fini from now on. */
void sdx_worker_priv_domain_touched(sdx_worker_t *w);
/* Run the domain's init now (sdx_worker_run then skips it): 0, or -1 with
   its reason in err. */
int sdx_worker_priv_init(sdx_worker_t *w, char *err, size_t err_len);

#endif
