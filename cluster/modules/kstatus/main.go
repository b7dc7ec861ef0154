// Command kstatus reads Kubernetes objects as JSON (a single object or a
// List, as `kubectl get -o json` prints) on stdin and prints, per object,
// "<namespace>/<name> <status> <message>" as computed by kstatus.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// apimachinery's decoder keeps integers int64, as unstructured expects.
	var object map[string]interface{}
	if err := json.Unmarshal(data, &object); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	items := []interface{}{object}
	if list, ok := object["items"].([]interface{}); ok {
		items = list
	}
	for _, item := range items {
		u := &unstructured.Unstructured{Object: item.(map[string]interface{})}
		result, err := status.Compute(u)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%s/%s %s %s\n", u.GetNamespace(), u.GetName(), result.Status, result.Message)
	}
}
