# tests/cluster.mk - multi-host mode against a real redis-server (tests/cluster/cluster.c).
CLUSTER_TEST := $(BUILD)/shmlimit-cluster-test
$(CLUSTER_TEST): tests/cluster/cluster.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(ALL_LDFLAGS) $(SHL_STATIC)

.PHONY: check-cluster
check-cluster: $(CLUSTER_TEST) $(BUILD)/shmlimit-agent $(BUILD)/.deps-test
	timeout 120 $(CLUSTER_TEST) --agent $(BUILD)/shmlimit-agent --scenario share --seconds 10
	timeout 60 $(CLUSTER_TEST) --agent $(BUILD)/shmlimit-agent --scenario spend --seconds 6
	timeout 60 $(CLUSTER_TEST) --agent $(BUILD)/shmlimit-agent --scenario feedback
	timeout 120 $(CLUSTER_TEST) --agent $(BUILD)/shmlimit-agent --scenario chaos --seconds 14
CHECKS += check-cluster
