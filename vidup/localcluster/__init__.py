"""The local cluster (`vidup cluster up | env | down`): a real one-node Kubernetes as local
processes, the way Kubernetes' ``hack/local-up-cluster.sh`` runs one, so the Helm chart runs
vidup as pods here exactly as on kind or minikube.

Modules: ``hostnet`` (node address, bridge CNI, sysctls, iptables teardown), ``runtime``
(containerd + runc), ``images`` (the images the cluster and the chart's defaults need, made
locally), ``node`` (kube-controller-manager, kube-scheduler, kubelet, kube-proxy), ``addons``
(CoreDNS, Traefik, the Gateway API, the default StorageClass), ``provisioner`` (host-path volumes
for PersistentVolumeClaims) and ``cluster`` (the order of it all, its state, and ``down``).
"""
