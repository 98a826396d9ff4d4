/*
 * libFuzzer target for the configuration loader: any bytes as the YAML file. It must give a
 * configuration or a reason, never crash, leak or read past what it was given. Inputs that
 * name device or process files are skipped (a *_file setting would read them).
 */
#include "rrcache/config.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536 || memmem(data, size, "/dev", 4) || memmem(data, size, "/proc", 5) ||
	    memmem(data, size, "/sys", 4))
		return 0;
	int fd = memfd_create("rrcache.yaml", 0);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return 0;
	}
	char path[64], err[RRC_ERR_LEN];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct rrc_config_overrides ov = {.resolv_conf = "/dev/null", .no_lookups = true};
	struct rrc_config *cfg = rrc_config_build(path, &ov, err);
	if (cfg) {
		char note[RRC_ERR_LEN];
		rrc_config_fit_descriptors(cfg, 1024, note, sizeof(note));
		rrc_config_free(cfg);
	} else if (!memchr(err, '\0', sizeof(err)) || !err[0]) {
		__builtin_trap(); /* a refusal always says why */
	}
	close(fd);
	return 0;
}
